"""Optimizers and learning-rate schedules shared by both trainers.

The LR is a pure function of the step (`lr_at`), written into the optimizer before every update, so there is no
scheduler object whose state could drift or be restored wrongly (the reference tokenizer trainer's warmup wrapper
left its generator LR divided by the warmup steps forever).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, then a constant, linear or cosine LR."""

    lr: float = 1e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0  # decoupled decay, applied to weights with ndim >= 2 only
    eps: float = 1e-8
    warmup_steps: int = 0  # linear warmup from lr / warmup_steps at step 0 to lr at warmup_steps
    schedule: str = "constant"  # after warmup: "constant", "linear" or "cosine" (to min_lr_ratio * lr at total_steps)
    total_steps: int | None = None  # cosine horizon; None: the trainer's max_steps
    min_lr_ratio: float = 0.1
    max_grad_norm: float | None = 1.0  # clip the global grad norm (None: no clipping)

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"lr must be in (0, 1); got {self.lr!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {self.betas!r}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(f"weight_decay, warmup_steps must be >= 0; got {self.weight_decay}, {self.warmup_steps}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None; got {self.max_grad_norm}")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1 or None; got {self.total_steps}")


@dataclass
class OptimizerGroup:
    """One optimizer of an update (`Trainer.update`) with what it steps: its parameters, their clip norm and this
    update's learning rate. `name` keys its gradient norm in the logs."""

    name: str
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    max_norm: float | None
    lr: float


def lr_at(config: OptimConfig, step: int, total_steps: int | None = None) -> float:
    """Learning rate for the update made at `step` (0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    horizon = config.total_steps or total_steps
    if horizon is None:
        raise ValueError(f"a {config.schedule} schedule needs total_steps (or the trainer's max_steps)")
    span = max(horizon - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    floor = config.min_lr_ratio
    if config.schedule == "linear":
        return config.lr * (floor + (1 - floor) * (1 - progress))
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(params: Iterable[nn.Parameter] | nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with two groups: weight decay on matrices/kernels, none on biases, norms and embeddings' 1-D params."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel (one pass over all tensors) where torch has one: floating params on the CPU or CUDA
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def grad_norm(params: Iterable[nn.Parameter]) -> torch.Tensor:
    """Global L2 norm of the gradients (0 when there are none); non-finite if any gradient is."""
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """Clip to `max_norm` (when given) and return the pre-clip global norm."""
    params = [p for p in params if p.grad is not None]
    if max_norm is None:
        return grad_norm(params)
    return torch.nn.utils.clip_grad_norm_(params, max_norm, error_if_nonfinite=False)
