"""The demo MaskGit's whole training update (masked-token loss, backward, AdamW) at the demo's shapes (batch 16, 3x8x8
codes of 1,000, 16-token 384-wide captions) four ways: eager fp32, bf16 autocast, `torch.compile` (what
`run.compile` does), and both (the demo recipe's stage two where the CPU computes bf16 natively). The compiled rows
also give the first call's seconds (compiling, with whatever inductor cache this machine has). Run alone:
`python -m benchmarks.maskgit_compile` (also part of `make bench`)."""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def time_update(compiled: bool, bf16: bool, repeats: int = 20) -> dict:
    """One mode: the first call's seconds, then the median of `repeats` updates after a second warm-up."""
    from maskgit import MaskGitConfig, MaskGitTransformer, maskgit_preset
    from maskgit.objective import masked_token_loss
    from trainers.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    config = MaskGitConfig(codebook_size=1000, latent_shape=(3, 8, 8), text_dim=384, **maskgit_preset("demo"))
    model = MaskGitTransformer(config).train()
    opt = build_optimizer(model, OptimConfig(lr=1e-3))
    forward = torch.compile(model) if compiled else model
    codes = torch.randint(0, 1000, (16, 3, 8, 8))
    text = (torch.randn(16, 16, 384), torch.ones(16, 16, dtype=torch.bool))
    gen = torch.Generator().manual_seed(0)

    def update() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = masked_token_loss(forward, codes, text, gen)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    t0 = time.perf_counter()
    update()
    first = time.perf_counter() - t0
    update()  # a second warm-up: autograd and the allocator settle
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        update()
        times.append(time.perf_counter() - t0)
    return {"compile": compiled, "bf16": bf16, "first_s": first, "median_s": statistics.median(times),
            "min_s": min(times), "max_s": max(times), "n": repeats}


def bench_update_modes(repeats: int = 20) -> list[dict]:
    """Eager fp32, bf16 autocast, compiled, compiled + bf16, in that order."""
    return [time_update(c, b, repeats) for c, b in ((False, False), (False, True), (True, False), (True, True))]


def table(rows: list[dict]) -> str:
    eager = rows[0]["median_s"]
    lines = ["| update (batch 16 x 192 tokens) | first call s | median s (min-max, n) | speed-up |",
             "|---|---|---|---|"]
    for r in rows:
        name = {(False, False): "eager fp32", (False, True): "bf16 autocast", (True, False): "torch.compile",
                (True, True): "torch.compile + bf16 autocast"}[(r["compile"], r["bf16"])]
        lines.append(f"| {name} | {r['first_s']:.1f} | {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}, "
                     f"{r['n']}) | {eager / r['median_s']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the demo MaskGit's training update: eager, bf16, compiled, both")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    print(table(bench_update_modes(args.repeats)))


if __name__ == "__main__":
    main()
