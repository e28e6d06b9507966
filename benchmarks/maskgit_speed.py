"""MaskGit at the demo model size (`maskgit` preset "demo") on a 5 x 16 x 16 token grid (one 17 x 128 x 128 clip of a
base tokenizer; 1,280 tokens, 2^10 codes, 384-wide text): a training step (masked-token loss, backward, AdamW) and
12- / 24-step sampling with classifier-free guidance 3 (cond + uncond in one batch), at batch 1 and 8.

Sampling times cover the transformer's decoding of codes (`maskgit.sampler.sample`), not the tokenizer's decode.
Figures are interleaved over the repeats (see `bench_maskgit` for warm-ups and FLOPs). Run alone:
`python -m benchmarks.maskgit_speed`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.compare_worker import flop_counter

GRID = (5, 16, 16)
CODEBOOK, TEXT_DIM, GUIDANCE = 2**10, 384, 3.0
PROMPT = "a red ball bouncing on a wooden floor"


def figures() -> tuple[dict[str, Callable[[], object]], dict]:
    """name -> callable, and the config that built them."""
    from maskgit import MaskGitConfig, MaskGitTransformer
    from maskgit.objective import masked_token_loss
    from maskgit.presets import maskgit_preset
    from maskgit.sampler import make_guided_logits_fn, sample
    from maskgit.text import TinyTextEncoder
    from trainers.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    config = MaskGitConfig(codebook_size=CODEBOOK, latent_shape=GRID, text_dim=TEXT_DIM, **maskgit_preset("demo"))
    model = MaskGitTransformer(config)
    opt = build_optimizer(model, OptimConfig(lr=1e-3))
    encoder = TinyTextEncoder(dim=TEXT_DIM)  # the test encoder: text encoding is not what is measured here
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Callable[[], object]] = {}
    for batch in (1, 8):
        text = encoder.encode([PROMPT] * batch)
        codes = torch.randint(0, CODEBOOK, (batch, *GRID), generator=gen)

        def train_step(codes=codes, text=text) -> None:
            model.train()
            loss, _ = masked_token_loss(model, codes, text, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[f"training step, batch {batch}"] = train_step
        for steps in (12, 24):
            def run(batch=batch, text=text, steps=steps) -> torch.Tensor:
                model.eval()
                return sample(make_guided_logits_fn(model, text), batch, config.seq_len,
                              generator=torch.Generator().manual_seed(0), vocab_sizes=config.vocab_sizes,
                              mask_id=config.mask_id, num_steps=steps, guidance_scale=GUIDANCE)

            out[f"{steps}-step guided sampling, batch {batch}"] = run
    params = sum(p.numel() for p in model.parameters())
    return out, {"preset": "demo", **maskgit_preset("demo"), "latent_shape": list(GRID), "codebook_size": CODEBOOK,
                 "text_dim": TEXT_DIM, "guidance_scale": GUIDANCE, "params": params}


def bench_maskgit(repeats: int = 3, budget_s: float = 60.0) -> dict:
    """Median / min / max seconds, FLOPs and GFLOP/s per figure; every figure runs once, then again while it fits
    `budget_s` (n says how often).

    FLOPs are counted on the batch-1 runs (which are their warm-ups) and scaled by 8 for batch 8: every counted op
    (matmuls, attention) is per row, so that is exact. The batch-8 training step gets a plain warm-up; batch-8
    sampling none (its first of 12 or 24 decoding steps is its own warm-up)."""
    fns, config = figures()
    flops, times = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        if name.endswith("batch 1"):
            with flop_counter() as counter:
                fn()
            flops[name] = float(counter.get_total_flops())
            flops[name.replace("batch 1", "batch 8")] = 8 * flops[name]
    fns["training step, batch 8"]()
    start = time.perf_counter()
    for r in range(repeats):  # interleaved; after the first round a figure runs again only while it fits the budget
        for name, fn in fns.items():
            if r and time.perf_counter() - start + statistics.median(times[name]) > budget_s:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "n": len(ts), "gflop": flops[name] / 1e9,
                      "gflops_per_s": flops[name] / 1e9 / med}
    return {"config": config, "figures": rows}


def maskgit_table(result: dict, limit_gflops: float | None = None) -> str:
    c = result["config"]
    t, h, w = c["latent_shape"]
    lines = [f"MaskGit, preset 'demo' ({c['params'] / 1e6:.2f}M params: dim {c['dim']}, depth {c['depth']}), "
             f"{t}x{h}x{w} = {t * h * w:,} tokens of {c['codebook_size']:,} codes, guidance {c['guidance_scale']:g}",
             "| figure | median s (min-max, n) | GFLOP | GFLOP/s | target |", "|---|---|---|---|---|"]
    for name, r in result["figures"].items():
        target = ""
        if name == "12-step guided sampling, batch 1":
            target = f"< 1 s: {'met' if r['median_s'] < 1.0 else 'not met'}"
        rate = f"{r['gflops_per_s']:.1f}"
        if limit_gflops:
            rate += f" ({100 * r['gflops_per_s'] / limit_gflops:.0f}% of the conv3d limit)"
        lines.append(f"| {name} | {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}, {r['n']}) | "
                     f"{r['gflop']:.1f} | {rate} | {target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="MaskGit training step and sampling speed at the demo size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    print(maskgit_table(bench_maskgit(args.repeats)))


if __name__ == "__main__":
    main()
