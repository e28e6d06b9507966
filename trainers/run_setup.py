"""What a run needs before it trains: the accelerator (the launcher's settings, DDP, the engines we refuse), the run
folder (never silently reused), the EMA, and the wall clock for --max-minutes."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, DistributedType
from accelerate.state import AcceleratorState
from accelerate.utils import DynamoBackend, InitProcessGroupKwargs, ProjectConfiguration
from ema_pytorch import EMA
from torch import nn

from trainers.argnames import KEYWORDS, ArgNames
from trainers.configs import EMAConfig, RunConfig


def native_bf16(cuda: bool | None = None) -> bool:
    """Whether this process's device computes in bf16 natively: a CUDA GPU that supports it, or a CPU with AMX or
    AVX512-BF16 (elsewhere torch emulates bf16 on the CPU, slower than fp32)."""
    if torch.cuda.is_available() if cuda is None else cuda:
        return torch.cuda.is_bf16_supported()
    if hasattr(torch.cpu, "get_capabilities"):  # a torch without it (the project allows >= 2.4): the kernel's flags
        caps = torch.cpu.get_capabilities()
        return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_mixed_precision(value: str | None, cuda: bool | None = None) -> str | None:
    """`run.mixed_precision` as accelerate takes it: "auto" -> "bf16" where `native_bf16()`, else "no"; other
    values unchanged (None: the launcher's choice)."""
    if value != "auto":
        return value
    return "bf16" if native_bf16(cuda) else "no"


_UNSUPPORTED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def make_accelerator(run: RunConfig, run_dir: str | os.PathLike | None = None) -> tuple[Accelerator, int]:
    """An Accelerator on the best available device, and the launcher's gradient-accumulation steps.

    The launcher's settings (`accelerate launch --mixed_precision`, its config file) apply unless the run config
    sets them. DDP (several GPUs, nodes, or CPU processes with gloo) and single-process runs work; FSDP, DeepSpeed and
    the launcher's dynamo backend refuse here, before any work, with one line. Gradient accumulation is ours: the
    launcher's `--gradient_accumulation_steps` is returned (the trainer uses it unless its config sets one) and the
    accelerator's own is set to 1, so `accelerator.backward` does not divide the loss a second time. The run's
    experiment trackers (`run.trackers()`) become accelerate's `log_with`, writing under RUN_DIR/run.logging_dir."""
    for var, engine in _UNSUPPORTED.items():
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes"):
            raise ValueError(f"{engine} is not supported by the magvit2-maskgit trainers yet (their checkpoints hold "
                             f"full, unsharded state); launch with DDP instead: accelerate launch --multi_gpu ...")
    kwargs: dict[str, Any] = {}
    cuda = torch.cuda.is_available()
    # the run's precision, else the launcher's (accelerate launch sets ACCELERATE_MIXED_PRECISION): never what an
    # earlier trainer in this process chose, which accelerate's process-wide state would otherwise keep (the demo's
    # bf16 stage one made its MaskGit train in bf16 too) or refuse to change with a ValueError
    kwargs["mixed_precision"] = (os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
                                 if run.mixed_precision is None else resolve_mixed_precision(run.mixed_precision, cuda))
    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") not in (
            None, kwargs["mixed_precision"]):
        AcceleratorState._reset_state()  # accelerate has no public way to change it; the process group is kept
    if run.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if run.trackers():
        from trainers.logging import check_trackers

        logging_dir = Path(run.logging_dir) if run_dir is None else Path(run_dir) / run.logging_dir
        kwargs.update(log_with=check_trackers(run.trackers()), project_config=ProjectConfiguration(
            project_dir=str(run_dir or "."), logging_dir=str(logging_dir)))
    acc = Accelerator(cpu=not cuda, dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=cuda),
                      kwargs_handlers=[process_group_kwargs(run)], **kwargs)
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(f"{acc.distributed_type.value} is not supported by the magvit2-maskgit trainers yet; launch "
                         "with DDP instead: accelerate launch --multi_gpu ...")
    if acc.state.dynamo_plugin.backend != DynamoBackend.NO:
        raise ValueError(f"the launcher's dynamo backend ({acc.state.dynamo_plugin.backend.value.lower()}) would "
                         "compile every prepared module, the discriminator's R1 loss included, which fails; launch "
                         "without it and pass --compile, which compiles what is safe to compile")
    launcher_accum = acc.gradient_accumulation_steps
    acc.gradient_accumulation_steps = 1
    return acc, launcher_accum


def prepare_ddp(acc: Accelerator, module: nn.Module, *, find_unused_parameters: bool = False,
                broadcast_buffers: bool = True) -> nn.Module:
    """`acc.prepare(module)` with DDP settings for this module alone. accelerate takes one
    `DistributedDataParallelKwargs` for every model; the tokenizer's G entry point and the transformer use every
    parameter at every step, while the D loss leaves the temporal discriminators unused on image batches and holds
    the frozen perceptual network, whose buffers need no broadcast each forward."""
    acc.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters,
                                                    broadcast_buffers=broadcast_buffers)
    try:
        return acc.prepare(module)
    finally:
        acc.ddp_handler = None


def compile_module(module: nn.Module, device: torch.device, log: Any) -> nn.Module:
    """`torch.compile(module)`, or `module` itself with a warning where inductor has no C++ compiler to build CPU
    kernels with (a CPU machine without g++ or clang++): the run then trains eagerly instead of failing at its first
    step. torch has no public check for this; `cpp_builder.get_cpp_compiler` is the search inductor itself runs."""
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as err:  # whatever the search raises, eager training still works
            log.warning("run.compile: no C++ compiler for torch.compile's CPU kernels (%s); training without "
                        "compiling (install g++, or set CXX, to compile)", str(err).splitlines()[0] if str(err) else
                        type(err).__name__)
            return module
    return torch.compile(module)


def absolute(path: str | os.PathLike) -> Path:
    """`path` made absolute (~ expanded, `..` folded, symlinks kept) when a trainer is built, so a later chdir
    changes nothing about where it reads and writes."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def process_group_kwargs(run: RunConfig) -> InitProcessGroupKwargs:
    """The process group's timeout: how long a collective waits for the slowest process (run.dist_timeout_minutes;
    NCCL's own default, 10 minutes, kills a job whose rank 0 writes a large checkpoint or builds an index)."""
    return InitProcessGroupKwargs(timeout=timedelta(minutes=run.dist_timeout_minutes))


def prepare_run_dir(run_dir: str | os.PathLike, resume: str | None, is_main: bool,
                    names: ArgNames = KEYWORDS) -> Path:
    """Create (or check) the run folder before any data is touched: writable, and never silently reused. An existing
    non-empty folder is used only when it is one of ours (it holds `RUN_MARKER`, written when we created it) or with
    `resume`; staging folders that a killed export left in it are removed. Returns it as an absolute path (a later
    chdir changes nothing). Errors name the inputs as the caller spells them (`names`: flags or keywords). Whether
    its disk can hold the run's checkpoints is checked once the models exist (`disk_space.check_disk_space`)."""
    from magvit2.serialization import atomic_write_text, remove_stale_staging
    from trainers.checkpointing import RUN_MARKER

    run_dir = absolute(run_dir)
    if is_main:
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(f"{names.give('run_dir', run_dir)} is a file, not a run folder")
        ours = (run_dir / RUN_MARKER).is_file()
        fresh = not run_dir.exists() or not any(run_dir.iterdir())
        if not (ours or fresh or resume is not None):
            raise FileExistsError(f"{names.give('run_dir', run_dir)} already exists and is not a run folder of ours "
                                  f"(no {RUN_MARKER}); refusing to write into it: choose a new {names['run_dir']}, "
                                  f"or pass {names['resume']} to continue a run")
        run_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            atomic_write_text(run_dir / RUN_MARKER, "magvit2-maskgit run folder: the trainers may write here\n")
        remove_stale_staging(run_dir)
        probe = run_dir / f".write-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"ok")
                os.fsync(f.fileno())
        except OSError as e:
            raise PermissionError(f"cannot write to the run folder {run_dir}: {e}") from e
        finally:
            probe.unlink(missing_ok=True)
        has_checkpoints = any((run_dir / "checkpoints").glob("step-*")) if (run_dir / "checkpoints").is_dir() else False
        if has_checkpoints and resume is None:
            raise FileExistsError(f"{run_dir} already holds checkpoints; pass {names.give('resume', 'latest')} to "
                                  f"continue it, or choose a new {names['run_dir']}")
    return run_dir


def build_ema(model: nn.Module, config: EMAConfig, device: torch.device | str) -> EMA:
    """EMA of `model` on `device` (created identically on every process; its `initted`/`step` counters checkpoint
    with it). The two counters stay on the CPU: ema-pytorch reads them with `.item()` in every `update()`, which on
    an accelerator would be a device sync per step."""
    ema = EMA(model, beta=config.beta, update_after_step=config.update_after_step,
              update_every=config.update_every, include_online_model=False).to(device)
    for name in ("step", "initted"):
        ema._buffers[name] = ema._buffers[name].cpu()  # ema-pytorch registers them as buffers; see the docstring
    return ema


class Clock:
    """Wall time of this invocation, for --max-minutes."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.start) / 60
