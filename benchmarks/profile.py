"""Where the time goes (docs/performance.md): torch.profiler's top operators, by self CPU time, for the demo
tokenizer's training update (G with GAN + D with R1, the shared forward), its tokenize and decode, and the demo
MaskGit's training step and 12-step guided sampling.

    python -m benchmarks.profile [--threads 1] [--top 12] [--only tokenizer|maskgit]

Shares of self time are what to compare between versions (they hold on a busy machine); absolute times only within
one quiet run. Prints the config, versions and machine first.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.run_all import header


def top_ops(fn, repeats: int, top: int) -> str:
    fn()  # warm-up: allocator, oneDNN primitive caches
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = [f"total self CPU {total / 1e6 / repeats:.3f} s per call ({repeats} calls)",
             "| operator | share of self time | calls per call |", "|---|---|---|"]
    for e in events[:top]:
        lines.append(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f}% | {e.count / repeats:.0f} |")
    return "\n".join(lines)


def tokenizer_cases():
    from benchmarks.run_all import demo_tokenizer_update

    tok, video, update, _ = demo_tokenizer_update()
    config = tok.config
    codes = tok.tokenize(video)

    def tokenize():
        with torch.no_grad():
            tok.tokenize(video)

    def decode():
        with torch.no_grad():
            tok.decode_from_code_indices(codes)

    desc = f"preset 'demo', batch 8 x 9 x {config.image_size[0]}x{config.image_size[1]}"
    return [(f"tokenizer training update (G + D), {desc}", update, 3), (f"tokenize, {desc}", tokenize, 5),
            (f"decode, {desc}", decode, 5)]


def maskgit_cases():
    from maskgit import MaskGitConfig, MaskGitTransformer
    from maskgit.sampler import make_guided_logits_fn, sample
    from maskgit.text import TinyTextEncoder

    torch.manual_seed(0)
    config = MaskGitConfig(codebook_size=1000, latent_shape=(3, 8, 8), dim=128, depth=4, heads=4, dim_head=32,
                           text_dim=384)  # the demo's transformer and token grid (as benchmarks.run_all)
    model = MaskGitTransformer(config)
    text = TinyTextEncoder(dim=384).encode(["a seven moving left"] * 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    codes = torch.randint(0, 1000, (8, config.seq_len), generator=torch.Generator().manual_seed(0))

    def step():
        from maskgit.objective import masked_token_loss

        loss, _ = masked_token_loss(model, codes, text, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sampling():
        with torch.no_grad():
            logits_fn = make_guided_logits_fn(model.eval(), text)
            sample(logits_fn, batch_size=8, seq_len=config.seq_len, vocab_sizes=model.vocab_sizes,
                   mask_id=model.mask_id, num_steps=12, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
        model.train()

    desc = f"demo size ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), batch 8, 3x8x8 codes"
    return [(f"MaskGit training step, {desc}", step, 5), (f"MaskGit 12-step guided sampling, {desc}", sampling, 2)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--only", choices=("all", "tokenizer", "maskgit"), default="all")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print("# magvit2-maskgit profile")
    print(json.dumps({**header(), "threads": a.threads}, indent=1))
    cases = []
    if a.only in ("all", "tokenizer"):
        cases += tokenizer_cases()
    if a.only in ("all", "maskgit"):
        cases += maskgit_cases()
    for title, fn, repeats in cases:
        print(f"\n## {title}\n{top_ops(fn, repeats, a.top)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
