"""One side of `benchmarks/reference_compare.py`: runs as a subprocess inside either benchmark environment.

It imports only the standard library and torch at the top, so the same file runs in our environment (this package)
and in the reference one (magvit2-pytorch 0.5.1 on torch 2.14.1, where this package is not installed; started with
`python -I`, so nothing of ours is importable there). Modes (results are JSON lines prefixed with `@@bench `; any
other output is a library's and is ignored):

  limits                         the machine's conv3d / matmul rates on this process's threads
  serve --impl NAME --config J   build one tokenizer + discriminator + optimizers, answer `ready`, then one command
                                 per stdin line: `time iteration|tokenize|decode`, `flops`, `quit`
  rss --impl NAME --config J     3 G steps in this fresh process, then its peak RSS

NAME: `ours-paper` / `ours-seed` (this package, `block_style` "paper" / "seed") or `reference` (magvit2-pytorch).
A G step is forward + backward + AdamW of the tokenizer with the reconstruction, quantizer and adversarial losses; a
D step is the discriminator's hinge loss + gradient penalty, backward and AdamW, each as its own trainer runs it
(ours reuses the G step's reconstruction; the reference's trainer runs the tokenizer forward again). Neither does
EMA, gradient clipping or LR schedules here.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

IMPLS = ("ours-paper", "ours-seed", "reference")
PREFIX = "@@bench "


def emit(payload: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): VmHWM, which starts afresh at exec (ru_maxrss does not: a child
    started from a bigger parent reports the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # KiB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def versions(names: tuple[str, ...]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"torch": torch.__version__}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# machine limits ---------------------------------------------------------------------------------------------------

def _rate(fn: Callable[[], object], flops: float, repeats: int) -> dict[str, float]:
    for _ in range(2 if repeats > 3 else 1):
        fn()  # warm-up: oneDNN builds its primitives on the first calls
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"gflop": flops / 1e9, "best_s": times[0], "median_s": times[len(times) // 2],
            "best_gflops": flops / 1e9 / times[0], "median_gflops": flops / 1e9 / times[len(times) // 2]}


def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX); without it torch emulates bf16 convs, slowly.
    (Not `trainers.run_setup.native_bf16`: this file runs under `python -I` in the reference environment, where
    nothing of ours imports.)"""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine_limits(repeats: int = 10) -> dict[str, dict]:
    """GFLOP/s of one 64->64 3x3x3 conv3d forward at a tokenizer-like size (batch 2, 20 frames of 32x32: our second
    level at 17 frames of 64x64), fp32 contiguous / fp32 channels-last / bf16 channels-last, and of a 2048^2 fp32
    matmul. FLOPs = 2 * multiply-adds (what torch.utils.flop_counter counts). Without native bf16 the bf16 conv runs
    at 1/20 of the size (1 x 64 x 4 x 16 x 16; emulated bf16 is tens of times slower than fp32 there)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 20, 32, 32, generator=g)
    w = torch.randn(64, 64, 3, 3, 3, generator=g) * 0.05
    cl = torch.channels_last_3d
    x_cl, w_cl = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
    x_bf = (x_cl if native_bf16() else x[:1, :, :4, :16, :16].contiguous(memory_format=cl)).bfloat16()
    w_bf = w_cl.bfloat16()
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    conv = torch.nn.functional.conv3d

    def conv_rate(x: torch.Tensor, w: torch.Tensor, n: int) -> dict:
        return {"input": list(x.shape), "dtype": str(x.dtype).removeprefix("torch."),
                **_rate(lambda: conv(x, w, padding=1), 2 * x.numel() * 64 * 27, n)}  # padding 1: output = x's shape

    with torch.no_grad():
        return {
            "conv3d_fp32": conv_rate(x, w, repeats),
            "conv3d_fp32_channels_last": conv_rate(x_cl, w_cl, repeats),
            "conv3d_bf16_channels_last": conv_rate(x_bf, w_bf, repeats if native_bf16() else 3),
            "matmul_fp32_2048": _rate(lambda: a @ b, 2 * 2048**3, repeats),
        }


# the two implementations ------------------------------------------------------------------------------------------

@dataclass
class Side:
    """One tokenizer set up for training and inference on fixed inputs. `d_step` uses the last `g_step`'s output."""

    g_params: int
    d_params: int
    g_step: Callable[[], None]
    d_step: Callable[[], None]
    tokenize: Callable[[], torch.Tensor]
    decode: Callable[[], torch.Tensor]
    settings: list[str] = field(default_factory=list)  # what this side was told to do beyond the shared config
    versions: dict[str, str | None] = field(default_factory=dict)


def _inputs(cfg: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = cfg["image_size"]
    return torch.rand(cfg["batch"], 3, cfg["frames"], size, size, generator=g) * 2 - 1  # (b, 3, t, h, w) in [-1, 1]


def build_ours(cfg: dict, block_style: str) -> Side:
    from magvit2 import VideoTokenizer
    from magvit2.losses import LossConfig, TokenizerLoss
    from magvit2.torch_utils import eval_mode
    from trainers.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    tok = VideoTokenizer(image_size=cfg["image_size"], init_dim=cfg["init_dim"], max_dim=cfg["max_dim"],
                         codebook_size=cfg["codebook_size"], layers=tuple(map(_layer, cfg["layers"])),
                         block_style=block_style).train()
    loss_fn = TokenizerLoss(LossConfig(perceptual_weight=0.0), tok.config).train()
    optim = OptimConfig(lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    opt_g, opt_d = build_optimizer(tok, optim), build_optimizer(loss_fn.discriminator_parameters(), optim)
    video, gen, state = _inputs(cfg), torch.Generator().manual_seed(0), {}

    def g_step() -> None:
        opt_g.zero_grad(set_to_none=True)
        out = tok.reconstruct(video)
        loss, _ = loss_fn.generator_loss(video, out, last_layer=tok.last_layer_weight, use_adversarial=True,
                                         generator=gen)
        loss.backward()
        opt_g.step()
        state["recon"] = out.recon.detach()

    def d_step() -> None:
        opt_d.zero_grad(set_to_none=True)
        loss, _ = loss_fn.discriminator_loss(video, state["recon"], apply_r1=True, generator=gen)
        loss.backward()
        opt_d.step()

    def decode() -> torch.Tensor:
        with torch.no_grad(), eval_mode(tok):
            return tok.decode_from_code_indices(state["codes"])

    state["codes"] = tok.tokenize(video)
    return Side(sum(p.numel() for p in tok.parameters()), sum(p.numel() for p in loss_fn.discriminator_parameters()),
                g_step, d_step, lambda: tok.tokenize(video), decode,
                [f"block_style={block_style!r}", "LossConfig() defaults (perceptual off), R1 applied on every D step "
                 "(the trainer's default: every 4th)", "AdamW from trainers.optim.build_optimizer"],
                versions(("magvit2-maskgit", "vector-quantize-pytorch", "accelerate")))


def build_reference(cfg: dict) -> Side:
    from magvit2_pytorch import VideoTokenizer
    from magvit2_pytorch.optimizer import get_optimizer

    torch.manual_seed(0)
    model = VideoTokenizer(image_size=cfg["image_size"], init_dim=cfg["init_dim"], max_dim=cfg["max_dim"],
                           codebook_size=cfg["codebook_size"], layers=tuple(map(_layer, cfg["layers"])),
                           perceptual_loss_weight=0.0)
    opt_g = get_optimizer(model.parameters(), lr=cfg["lr"], wd=cfg["weight_decay"])
    opt_d = get_optimizer(model.discr_parameters(), lr=cfg["lr"], wd=cfg["weight_decay"])
    video, state = _inputs(cfg), {}

    def g_step() -> None:  # VideoTokenizerTrainer.train_step's generator half
        model.train()
        opt_g.zero_grad()
        loss, _ = model(video, return_loss=True)
        loss.backward()
        opt_g.step()

    def d_step() -> None:  # ... and its discriminator half (a second tokenizer forward, as its trainer does)
        model.train()
        opt_d.zero_grad()
        loss, _ = model(video, return_discr_loss=True, apply_gradient_penalty=True)
        loss.backward()
        opt_d.step()

    def decode() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model.decode_from_code_indices(state["codes"])

    state["codes"] = model.tokenize(video)
    return Side(sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.discr_parameters()),
                g_step, d_step, lambda: model.tokenize(video), decode,
                ["perceptual_loss_weight=0.0 (its VGG16 needs downloaded weights)",
                 "flash_attn left at its default: without CUDA its Attend takes the einsum path",
                 "apply_gradient_penalty=True on every D step (its trainer's default: every 4th)",
                 "AdamW from magvit2_pytorch.optimizer.get_optimizer",
                 "its tokenize() leaves the model in eval mode: each step calls model.train() first, as its trainer"],
                versions(("magvit2-pytorch", "vector-quantize-pytorch", "accelerate")))


def _layer(spec: str | list) -> str | tuple:
    return spec if isinstance(spec, str) else tuple(spec)  # JSON lists back to the (name, count) tuples


def build(impl: str, cfg: dict) -> Side:
    if impl == "reference":
        return build_reference(cfg)
    if impl in ("ours-paper", "ours-seed"):
        return build_ours(cfg, impl.removeprefix("ours-"))
    raise ValueError(f"unknown impl {impl!r}; expected one of {IMPLS}")


# commands ---------------------------------------------------------------------------------------------------------

def time_op(side: Side, op: str) -> dict[str, float]:
    if op == "iteration":
        t0 = time.perf_counter()
        side.g_step()
        t1 = time.perf_counter()
        side.d_step()
        t2 = time.perf_counter()
        return {"g_step": t1 - t0, "d_step": t2 - t1, "iteration": t2 - t0}
    fn = {"tokenize": side.tokenize, "decode": side.decode}[op]
    t0 = time.perf_counter()
    fn()
    return {op: time.perf_counter() - t0}


class _NoModules:
    """Stands in for FlopCounterMode's module tracker: its backward hooks break `autograd.grad` on leaf inputs (both
    gradient penalties: "A leaf node was passed to _will_engine_execute_node"); we only need the global total."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def flop_counter():
    """`torch.utils.flop_counter.FlopCounterMode` counting globally (matmuls, convs, attention; 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModules()
    return counter


def count_flops(side: Side) -> dict[str, float]:
    """FLOPs of each operation."""
    out = {}
    for name, fn in (("g_step", side.g_step), ("d_step", side.d_step), ("tokenize", side.tokenize),
                     ("decode", side.decode)):
        with flop_counter() as counter:
            fn()
        out[name] = float(counter.get_total_flops())
    out["iteration"] = out["g_step"] + out["d_step"]
    return out


def serve(impl: str, cfg: dict) -> None:
    t0 = time.perf_counter()
    side = build(impl, cfg)
    emit({"ready": True, "impl": impl, "g_params": side.g_params, "d_params": side.d_params,
          "settings": side.settings, "versions": side.versions, "threads": torch.get_num_threads(),
          "build_s": time.perf_counter() - t0, "rss_mb": peak_rss_mb()})
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            emit({"bye": True})
            return
        if words[0] == "flops":
            emit({"flops": count_flops(side)})
        elif words[0] == "time" and len(words) == 2:
            emit({"seconds": time_op(side, words[1])})
        else:
            emit({"error": f"unknown command {line.strip()!r}"})


def rss(impl: str, cfg: dict, steps: int) -> None:
    side = build(impl, cfg)
    after_build = peak_rss_mb()
    for _ in range(steps):
        side.g_step()
    emit({"impl": impl, "steps": steps, "peak_rss_mb": peak_rss_mb(), "after_build_mb": after_build})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("limits", "serve", "rss"))
    p.add_argument("--impl", choices=IMPLS)
    p.add_argument("--config", help="the shared tokenizer config as JSON")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "limits":
        emit({"limits": machine_limits(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "native_bf16": native_bf16()})
        return
    if args.impl is None or args.config is None:
        p.error(f"{args.mode} needs --impl and --config")
    cfg = json.loads(args.config)
    serve(args.impl, cfg) if args.mode == "serve" else rss(args.impl, cfg, args.steps)


if __name__ == "__main__":
    main()
