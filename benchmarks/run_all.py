"""`make bench`: speed and memory of the main paths, printed with their config, versions and machine.

1. LFQ entropy loss at 2^18 codes (the paper's codebook) on a 5x16x16 latent: ours (factorised, exact) vs
   vector-quantize-pytorch's LFQ (tokens x codes matrix), side by side: peak RSS and seconds for forward+backward,
   each in a fresh process.
2. Tokenizer: tokenize / decode / one training update (G + D on the shared forward) for the demo preset at 9 frames.
3. MaskGit: 12-step sampling with classifier-free guidance for the demo-sized transformer.
4. LoRA vs a full fine-tune of the same pipeline (`benchmarks.lora`): adapter size, trainable parameters, optimizer
   state, peak training memory, steps/s at the demo size and a bigger one; and, when a finished demo run exists
   (BENCH_DEMO, default runs/demo), what each learns in the same minutes (`benchmarks.lora_learning`).
Timings are medians of repeated runs after a warm-up; compare numbers only within one run of this script.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

LFQ_PROBE = r"""
import json, resource, sys, time, torch
torch.manual_seed(0)
which, bits, tokens_t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dim = 64
if which == "ours":
    from magvit2 import TokenizerConfig
    from magvit2.quantize import LFQuantizer
    q = LFQuantizer(dim, TokenizerConfig(image_size=8, codebook_size=2**bits, layers=("residual",))).train()
    run = lambda x: q(x).aux_loss
else:
    from vector_quantize_pytorch import LFQ
    q = LFQ(dim=dim, codebook_size=2**bits, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
            channel_first=True).train()
    run = lambda x: q(x)[2]
x = (torch.randn(1, dim, tokens_t, 16, 16) * 0.1).requires_grad_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
run(x).backward()
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak / 1024, "added_mb": (peak - before) / 1024}))
"""


def header() -> dict:
    from importlib.metadata import version

    import einops

    from magvit2.serialization import package_version

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"package": package_version(), "torch": torch.__version__, "python": platform.python_version(),
            "vector_quantize_pytorch": version("vector-quantize-pytorch"), "x_transformers": version("x-transformers"),
            "einops": einops.__version__, "peft": _version_or_none("peft"),
            "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _version_or_none(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def timed(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_lfq() -> None:
    print("\n## LFQ entropy loss, 2^18 codes, latent 1 x 5 x 16 x 16 (1,280 tokens), dim 64, forward+backward")
    print("| implementation | peak RSS (MB) | added by the loss (MB) | seconds |\n|---|---|---|---|")
    for which in ("ours", "vector-quantize-pytorch"):
        result = subprocess.run([sys.executable, "-c", LFQ_PROBE, which, "18", "5"], capture_output=True, text=True,
                                timeout=900)
        if result.returncode:
            print(f"| {which} | failed: {result.stderr.strip().splitlines()[-1]} | | |")
            continue
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {which} | {r['peak_rss_mb']:.0f} | {r['added_mb']:.0f} | {r['seconds']:.2f} |")


def bench_tokenizer() -> None:
    from magvit2 import VideoTokenizer, preset_config
    from magvit2.losses import LossConfig, TokenizerLoss

    torch.manual_seed(0)
    config = preset_config("demo")
    tok = VideoTokenizer(config)
    loss_fn = TokenizerLoss(LossConfig(temporal_window_lengths=(4,)), config)
    opt_g = torch.optim.AdamW(tok.parameters(), lr=1e-4)
    opt_d = torch.optim.AdamW(loss_fn.discriminator_parameters(), lr=1e-4)
    video = torch.rand(8, 3, 9, *config.image_size) * 2 - 1  # the demo's clips
    gen = torch.Generator().manual_seed(0)

    def update():
        out = tok.reconstruct(video)
        g, _ = loss_fn.generator_loss(video, out, last_layer=tok.last_layer_weight, use_adversarial=True,
                                      generator=gen)
        opt_g.zero_grad()
        g.backward()
        opt_g.step()
        d, _ = loss_fn.discriminator_loss(video, out.recon.detach(), apply_r1=True, generator=gen)
        opt_d.zero_grad()
        d.backward()
        opt_d.step()

    codes = tok.tokenize(video)
    params = sum(p.numel() for p in tok.parameters()) / 1e6
    d_params = sum(p.numel() for p in loss_fn.discriminator_parameters()) / 1e6
    print(f"\n## Tokenizer, preset 'demo' ({params:.2f}M params; discriminators {d_params:.2f}M), batch 8 x 9 x "
          f"{config.image_size[0]}x{config.image_size[1]} -> codes {tuple(codes.shape)}")
    print("| operation | median seconds | clips/s |\n|---|---|---|")
    with torch.no_grad():
        t = timed(lambda: tok.tokenize(video))
        print(f"| tokenize | {t:.3f} | {8 / t:.1f} |")
        t = timed(lambda: tok.decode_from_code_indices(codes))
        print(f"| decode_from_code_indices | {t:.3f} | {8 / t:.1f} |")
    t = timed(update, repeats=3)
    print(f"| training update (G with GAN + D with R1) | {t:.3f} | {8 / t:.1f} |")


def bench_maskgit() -> None:
    from maskgit import MaskGitConfig, MaskGitTransformer
    from maskgit.sampler import make_guided_logits_fn, sample
    from maskgit.text import TinyTextEncoder

    torch.manual_seed(0)
    config = MaskGitConfig(codebook_size=1000, latent_shape=(3, 8, 8), dim=128, depth=4, heads=4, dim_head=32,
                           text_dim=384)  # the demo's transformer and token grid
    model = MaskGitTransformer(config).eval()
    text = TinyTextEncoder(dim=384).encode(["the digit seven moving up"] * 8)
    logits_fn = make_guided_logits_fn(model, text)
    params = sum(p.numel() for p in model.parameters()) / 1e6

    def run():
        with torch.no_grad():
            sample(logits_fn, 8, config.seq_len, generator=torch.Generator().manual_seed(0),
                   vocab_sizes=config.vocab_sizes, mask_id=config.mask_id, num_steps=12, guidance_scale=3.0)

    t = timed(run, repeats=3)
    t_, h, w = config.latent_shape
    print(f"\n## MaskGit sampling: {params:.2f}M params, {config.seq_len} tokens ({t_}x{h}x{w}) of "
          f"{config.codebook_size} codes, 12 steps, guidance 3 (cond + uncond in one batch of 16)")
    print("| batch | median seconds | videos/s (codes only) |\n|---|---|---|")
    print(f"| 8 | {t:.3f} | {8 / t:.1f} |")


def main() -> None:
    print("# magvit2-maskgit benchmarks")
    print(json.dumps(header(), indent=1))
    bench_lfq()
    bench_tokenizer()
    bench_maskgit()
    bench_lora()


def bench_lora() -> None:
    from pathlib import Path

    from benchmarks import lora, lora_learning

    lora.main([])
    demo = Path(os.environ.get("BENCH_DEMO", "runs/demo"))
    print("\n## What LoRA and a full fine-tune learn in the same minutes (a new phrasing of every demo prompt)")
    if not (demo / "maskgit" / "pipeline" / "pipeline.json").is_file():
        print(f"not run: no finished demo at {demo} (make demo, or BENCH_DEMO=RUN_DIR make bench)")
        return
    out = Path("runs/bench-lora-learning")
    if out.exists():
        out.rename(out.with_name(f"{out.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}"))
    lora_learning.main(["--demo", str(demo), "--out", str(out)])


if __name__ == "__main__":
    main()
