"""Small torch helpers both stages share: module modes and generator-driven uniform draws."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_forward", "eval_mode", "module_device", "module_dtype", "uniform"]


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Every submodule of `modules` in eval mode inside the block; each one's own mode restored afterwards."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """U[0, 1) draws from `generator` (on the generator's own device, so results do not depend on `device`), moved
    to `device`."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def checkpoint_forward(module: nn.Module, enabled: bool = True) -> None:
    """Activation checkpointing for `module` (its activations are recomputed in the backward instead of stored)
    while it trains with gradients; parameter names and outputs are unchanged. Set it on the online model after any
    `copy.deepcopy` of it (an EMA copy would otherwise call back into this module)."""
    if not enabled:
        module.__dict__.pop("forward", None)
        return
    original = type(module).forward.__get__(module)

    def forward(*args, **kwargs):
        if module.training and torch.is_grad_enabled():
            return checkpoint(original, *args, use_reentrant=False, **kwargs)
        return original(*args, **kwargs)

    module.forward = forward


def module_dtype(module: nn.Module, skip: tuple[str, ...] = ()) -> torch.dtype:
    """The dtype of `module`'s first floating parameter (or buffer) whose name starts with none of `skip`; float32
    for a module without any."""
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        if t.is_floating_point() and not name.startswith(skip):
            return t.dtype
    return torch.float32


def module_device(module: nn.Module) -> torch.device:
    """The device of `module`'s first parameter (or buffer); the CPU for a module without any."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")
