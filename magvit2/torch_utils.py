"""Small torch helpers both stages share: module modes and generator-driven uniform draws."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["eval_mode", "uniform"]


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
