"""`make gpu-check`: the GPU paths of both trainers in one command, measured.

For the tokenizer (one G + D update on the shared forward) and the MaskGit transformer (one masked-token update), at
the `base` presets, with bf16 autocast, `torch.compile` and SDPA (flash / memory-efficient attention): step time,
clips/s, peak GPU memory and MFU (model FLOPs counted by torch's FlopCounterMode, x3 for forward + backward, over the
GPU's dense bf16 peak). With several GPUs visible it then runs a 2-GPU DDP smoke run of both training commands
(torchrun, tiny presets, generated clips) and checks both processes trained.

    python -m benchmarks.gpu_check                 # on a GPU machine
    python -m benchmarks.gpu_check --device cpu --preset tiny --steps 2 --no-compile   # the code path, on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "4090": 165.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, steps: int, clips: int, flops: float) -> dict[str, float]:
    """Median seconds of `step()` over `steps` runs after two warm-ups (compilation), clips/s, peak memory, MFU."""
    for _ in range(2):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    peak = peak_tflops(device)
    out = {"step_s": round(seconds, 4), "clips_per_s": round(clips / seconds, 2),
           "tflops_per_step": round(flops / 1e12, 3)}
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if peak:
        out["mfu"] = round(flops / seconds / (peak * 1e12), 3)
    return out


def count_flops(fn) -> float:
    """FLOPs of one forward + backward: the forward's count x 3."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return 3.0 * counter.get_total_flops()


def tokenizer_check(args, device: torch.device) -> dict:
    from magvit2 import VideoTokenizer, preset_config
    from magvit2.losses import LossConfig, TokenizerLoss

    torch.manual_seed(0)
    config = preset_config(args.preset)
    tokenizer = VideoTokenizer(config).to(device).train()
    loss_fn = TokenizerLoss(LossConfig(), config).to(device).train()
    frames = 17 if args.preset in ("base", "paper") else 5
    h, w = config.image_size
    video = torch.rand(args.tokenizer_batch, 3, frames, h, w, device=device) * 2 - 1
    opt_g = torch.optim.AdamW(tokenizer.parameters(), lr=1e-4)
    opt_d = torch.optim.AdamW(loss_fn.discriminator_parameters(), lr=1e-4)
    reconstruct = torch.compile(tokenizer.reconstruct) if args.compile else tokenizer.reconstruct
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            out = reconstruct(video, step=0)
            g_loss, _ = loss_fn.generator_loss(video, out, last_layer=tokenizer.last_layer_weight, step=0,
                                               use_adversarial=True, generator=torch.Generator(device).manual_seed(0))
        g_loss.backward()
        with autocast:
            d_loss, _ = loss_fn.discriminator_loss(video, out.recon.detach(),
                                                   generator=torch.Generator(device).manual_seed(1))
        d_loss.backward()
        opt_g.step(), opt_d.step(), opt_g.zero_grad(set_to_none=True), opt_d.zero_grad(set_to_none=True)

    flops = count_flops(lambda: tokenizer.reconstruct(video, step=0))
    params = sum(p.numel() for p in tokenizer.parameters())
    return {"what": f"tokenizer {args.preset} G+D update, batch {args.tokenizer_batch} x {frames} x {h}x{w}",
            "params_m": round(params / 1e6, 1), **measure(step, device, args.steps, video.shape[0], flops)}


def maskgit_check(args, device: torch.device) -> dict:
    from maskgit import MaskGitConfig, MaskGitTransformer, maskgit_preset
    from maskgit.objective import masked_token_loss
    from maskgit.text import TextEmbedding

    torch.manual_seed(0)
    grid = (5, 16, 16) if args.preset in ("base", "paper") else (2, 4, 4)
    config = MaskGitConfig(codebook_size=2**18, latent_shape=grid, text_dim=384, **maskgit_preset(args.preset))
    model = MaskGitTransformer(config).to(device).train()
    forward = torch.compile(model) if args.compile else model
    b = args.maskgit_batch
    codes = torch.randint(0, config.codebook_size, (b, *grid), device=device)
    text = TextEmbedding(torch.randn(b, 16, 384, device=device), torch.ones(b, 16, dtype=torch.bool, device=device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss, _ = masked_token_loss(forward, codes, text, torch.Generator(device).manual_seed(0), config=config)
        loss.backward()
        optimizer.step(), optimizer.zero_grad(set_to_none=True)

    flops = count_flops(lambda: model(codes.flatten(1), text, grid=grid))
    params = sum(p.numel() for p in model.parameters())
    return {"what": f"maskgit {args.preset} update, batch {b} x {grid} tokens (2^18 codes, factorised heads)",
            "params_m": round(params / 1e6, 1), **measure(step, device, args.steps, b, flops)}


def ddp_smoke(gpus: int) -> dict:
    """Both training commands on 2 GPUs (torchrun, DDP), tiny presets, generated clips; both processes must train."""
    from PIL import Image

    from tests.helpers.media import pan_frames
    from trainers.data.video_io import write_video

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for i, photo in enumerate(("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "cat", "page")):
            write_video(data / f"v{i}.mp4", pan_frames(9, (32, 32), photo), lossless=True)
            Image.fromarray(pan_frames(1, (32, 32), photo)[0]).save(data / f"i{i}.png")
        run = Path(tmp) / "tok"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "scripts.train_tokenizer", "--data", str(data), "--out", str(run), "--preset", "tiny", "--max-steps",
               "10", "--batch-size", "2", "--mixed-precision", "bf16"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        summary = json.loads((run / "summary.json").read_text()) if proc.returncode == 0 else {}
        results["tokenizer_2gpu_ddp"] = {"returncode": proc.returncode, "world_size": summary.get("world_size"),
                                         "steps": summary.get("step"), "seconds": round(time.perf_counter() - start),
                                         **({"stderr_tail": proc.stderr[-800:]} if proc.returncode else {})}
    return results


def offload_check(device: torch.device) -> dict:
    """`enable_model_cpu_offload` on a GPU: only the running model sits on the GPU, the others stay on the CPU, and
    the codes match a pipeline kept on the GPU (a tiny pipeline; moved here from the CPU-only test suite)."""
    from magvit2 import VideoTokenizer, preset_config
    from maskgit import MaskGitConfig, MaskGitTransformer, TextToVideoPipeline
    from maskgit.pipeline_settings import PipelineDefaults
    from maskgit.text import TinyTextEncoder

    torch.manual_seed(0)
    tokenizer = VideoTokenizer(preset_config("tiny"))
    transformer = MaskGitTransformer(MaskGitConfig(codebook_size=tokenizer.codebook_size,
                                                   latent_shape=tokenizer.latent_shape(5), dim=32, depth=1, heads=2,
                                                   dim_head=16, text_dim=16))
    pipe = TextToVideoPipeline(tokenizer, TinyTextEncoder(dim=16), transformer, PipelineDefaults(num_inference_steps=4))
    want = pipe.to(device)("a", generator=torch.Generator().manual_seed(0), output_type="latent").frames.cpu()
    pipe.to("cpu").enable_model_cpu_offload()
    seen = []
    got = pipe("a", generator=torch.Generator().manual_seed(0), output_type="latent", callback=lambda *a: seen.append(
        (pipe.transformer.device.type, pipe.tokenizer.device.type, pipe.text_encoder.device.type))).frames
    return {"devices_while_sampling": sorted(set(seen)),
            "all_on_cpu_after": all(m.device.type == "cpu" for m in pipe.components.values()),
            "output_device": got.device.type, "codes_equal_fraction": float((got.cpu() == want).float().mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="base", choices=("tiny", "demo", "base", "paper"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tokenizer-batch", type=int, default=4)
    p.add_argument("--maskgit-batch", type=int, default=16)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("gpu-check: no CUDA GPU is visible; run it on a GPU machine, or --device cpu for the code path")
            return 2
        torch.backends.cuda.matmul.allow_tf32 = True
    report = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "device": torch.cuda.get_device_name(device)
                          if device.type == "cuda" else platform.processor() or "cpu",
                          "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda},
              "settings": {"preset": args.preset, "bf16": device.type == "cuda", "compile": args.compile,
                           "steps": args.steps}}
    report["tokenizer"] = tokenizer_check(args, device)
    report["maskgit"] = maskgit_check(args, device)
    if device.type == "cuda":
        report["model_cpu_offload"] = offload_check(device)
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        report["multi_gpu"] = ddp_smoke(torch.cuda.device_count())
    print(json.dumps(report, indent=2))
    failed = report.get("multi_gpu", {}).get("tokenizer_2gpu_ddp", {}).get("returncode", 0)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
