"""`make bench`: speed and memory of the main paths, printed with their config, versions and machine.

demo (the demo's own shapes):
1. Tokenizer: tokenize / decode / one training update (G + D on the shared forward) for the demo preset at 9 frames.
2. MaskGit: 12-step sampling with classifier-free guidance for the demo-sized transformer on the demo's 3x8x8 grid.
3. Both stages' training updates (backward, no optimizer) in fp32 and under CPU bf16 autocast (`run.mixed_precision:
   auto`); the MaskGit's whole update eager, in bf16, compiled and both (`benchmarks.maskgit_compile`).
reference (`benchmarks.reference_compare`): side by side with magvit2-pytorch 0.5.1 in its own environment, the
machine's conv3d limit, LFQ at 2^10 / 2^14 / 2^18 codes vs vector-quantize-pytorch, MaskGit on a 5x16x16 grid.
lora (`benchmarks.lora`): LoRA vs a full fine-tune of the same pipeline: adapter size, trainable parameters,
optimizer state, peak training memory, steps/s at the demo size and a bigger one; and, when a finished demo run
exists (BENCH_DEMO, default runs/demo), what each learns in the same minutes (`benchmarks.lora_learning`).
Timings are medians of repeated runs after a warm-up; compare numbers only within one run of this script.
`python -m benchmarks.run_all --only demo|lora|reference [reference flags...]` runs one part; flags after --only go to
`benchmarks.reference_compare` (see its --help).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch


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


def demo_tokenizer_update():
    """(tokenizer, video, update): the demo tokenizer, a batch of 8 x 9 x 32x32 clips in [-1, 1], and one training
    update on it (G with GAN + D with R1 on the shared forward); also `benchmarks.profile`'s."""
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

    return tok, video, update, loss_fn


def bench_tokenizer() -> None:
    tok, video, update, loss_fn = demo_tokenizer_update()
    config = tok.config
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
    from maskgit import MaskGitConfig, MaskGitTransformer, maskgit_preset
    from maskgit.sampler import make_guided_logits_fn, sample
    from maskgit.text import TinyTextEncoder

    torch.manual_seed(0)
    config = MaskGitConfig(codebook_size=1000, latent_shape=(3, 8, 8), text_dim=384,
                           **maskgit_preset("demo"))  # the demo's transformer and token grid
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


def bench_precision() -> None:
    """The updates `make demo` trains, in fp32 and under bf16 autocast (what `run.mixed_precision: auto` picks
    where `native_bf16()`): stage one's reconstruction-only update on 8 clips and on its frame phase's 32 still frames
    (1-frame clips), stage two's masked-token update on 16 code clips with 16-token captions."""
    from magvit2 import VideoTokenizer, preset_config
    from maskgit import MaskGitConfig, MaskGitTransformer, maskgit_preset
    from maskgit.objective import masked_token_loss
    from trainers.run_setup import native_bf16

    torch.manual_seed(0)
    tok = VideoTokenizer(preset_config("demo"))
    video = torch.rand(8, 3, 9, *tok.config.image_size) * 2 - 1
    frames = torch.rand(32, 3, 1, *tok.config.image_size) * 2 - 1  # the frame phase's batch of still images
    config = MaskGitConfig(codebook_size=1000, latent_shape=(3, 8, 8), text_dim=384, **maskgit_preset("demo"))
    model = MaskGitTransformer(config)
    codes, text = torch.randint(0, 1000, (16, 3, 8, 8)), (torch.randn(16, 16, 384), torch.ones(16, 16, dtype=bool))
    gen = torch.Generator().manual_seed(0)

    def update(module, loss_fn, bf16):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn()
            loss.backward()
            module.zero_grad(set_to_none=True)
        return run

    losses = {"tokenizer (recon-only update, 8 clips)": (tok, lambda: (tok(video).float() - video).pow(2).mean()),
              "tokenizer's frame phase (recon-only update, 32 still frames)":
                  (tok, lambda: (tok(frames).float() - frames).pow(2).mean()),
              "MaskGit (masked-token update, batch 16)": (model, lambda: masked_token_loss(model, codes, text, gen)[0])}
    print(f"\n## The demo's training updates, fp32 and bf16 autocast (this CPU computes bf16 natively: "
          f"{native_bf16(cuda=False)})")
    print("| update | fp32 median s | bf16 median s | speed-up |\n|---|---|---|---|")
    for name, (module, loss_fn) in losses.items():
        fp32, bf16 = (timed(update(module, loss_fn, b), repeats=5) for b in (False, True))
        print(f"| {name} | {fp32:.4g} | {bf16:.4g} | {fp32 / bf16:.3g}x |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="make bench: the demo-shape benchmarks and the side-by-side comparison",
                                epilog="other flags go to benchmarks.reference_compare (see its --help)")
    p.add_argument("--only", choices=("all", "demo", "lora", "reference"), default="all")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (every process)")
    p.add_argument("--reference-python", help="python of the reference environment (make bench passes it)")
    args, rest = p.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    print("# magvit2-maskgit benchmarks")
    print(json.dumps(header(), indent=1))
    if args.only in ("all", "demo"):
        bench_tokenizer()
        bench_maskgit()
        bench_precision()
        from benchmarks.maskgit_compile import bench_update_modes, table

        print("\n## The demo MaskGit's whole update (loss, backward, AdamW): eager, bf16, torch.compile, both")
        print(table(bench_update_modes()))
    code = 0
    if args.only in ("all", "lora"):
        bench_lora()
    if args.only in ("all", "reference"):
        from benchmarks import reference_compare

        print()
        ref = ["--reference-python", args.reference_python] if args.reference_python else []
        code = reference_compare.main([*rest, *ref, "--threads", str(args.threads)])
    elif rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    print(f"\nmake bench: {(time.monotonic() - start) / 60:.1f} min")
    return code


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
    sys.exit(main())
