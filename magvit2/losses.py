"""Tokenizer training losses: pure functions, and `TokenizerLoss`, which composes them with the discriminators.

Pure functions (all return scalar tensors): `reconstruction_loss`, `hinge_d_loss`, `hinge_g_loss`, `adaptive_weight`,
`lecam_reg`, `r1_penalty`; `LeCamEMA` keeps the two EMA scalars LeCam needs as buffers (so they checkpoint).

`TokenizerLoss` owns the D side (3D discriminator, optional temporal discriminators, LeCam EMAs) and, only when
`perceptual_weight > 0`, a frozen LPIPS-style network that never enters `state_dict()` (see `magvit2.perceptual`).
The trainer calls `generator_loss` (G step) and `discriminator_loss` (D step on the detached reconstruction) and gives
`discriminator_parameters()` to the D optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit2.config import TokenizerConfig
from magvit2.discriminator import Discriminator3D, DiscriminatorConfig, TemporalDiscriminators, as_video
from magvit2.distributed import mean_over_processes
from magvit2.perceptual import LPIPSDistance
from magvit2.serialization import config_from_dict

# ---------------------------------------------------------------------------------------------------------------
# pure functions


def reconstruction_loss(x: Tensor, y: Tensor, kind: str = "l2") -> Tensor:
    """Mean absolute ('l1') or squared ('l2') error over all elements of two same-shape tensors."""
    if x.shape != y.shape:
        raise ValueError(f"reconstruction_loss needs same-shape inputs; got {tuple(x.shape)} and {tuple(y.shape)}")
    if kind == "l1":
        return F.l1_loss(x.float(), y.float())
    if kind == "l2":
        return F.mse_loss(x.float(), y.float())
    raise ValueError(f"kind must be 'l1' or 'l2'; got {kind!r}")


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss `mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))` (no 1/2 factor)."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss `-mean(D(fake))`."""
    return -fake_logits.float().mean()


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN's adaptive GAN weight `||d nll / d last|| / (||d g / d last|| + 1e-4)`, clamped to [0, max_weight] and
    detached. `last_layer` is the decoder's final weight; the graphs are retained for the real backward. A loss that
    does not reach `last_layer` counts as a zero gradient. On several processes the gradients are averaged first,
    so the weight is the global batch's."""
    if not isinstance(last_layer, Tensor) or not last_layer.requires_grad:
        raise ValueError("last_layer must be a tensor that requires grad (the decoder's final conv weight)")
    norms = []
    for loss in (nll_loss, g_loss):
        (grad,) = torch.autograd.grad(loss, last_layer, retain_graph=True, allow_unused=True)
        grad = torch.zeros_like(last_layer, dtype=torch.float32) if grad is None else grad.float()
        norms.append(mean_over_processes(grad).norm())
    return (norms[0] / (norms[1] + 1e-4)).clamp(0.0, max_weight).detach()


def lecam_reg(real_logits: Tensor, fake_logits: Tensor, ema_real: Tensor, ema_fake: Tensor) -> Tensor:
    """LeCam regulariser (Tseng et al. 2021, as in their code and MAGVIT):
    `mean(relu(D(real) - ema_fake)^2) + mean(relu(ema_real - D(fake))^2)`. Zero when real logits are <= the fake EMA
    and fake logits are >= the real EMA; it keeps D's predictions from drifting apart."""
    ema_real, ema_fake = ema_real.detach().clone(), ema_fake.detach().clone()
    return F.relu(real_logits.float() - ema_fake).pow(2).mean() + F.relu(ema_real - fake_logits.float()).pow(2).mean()


def r1_penalty(real_logits: Tensor, real_input: Tensor) -> Tensor:
    """R1 gradient penalty `E_x ||d D(x) / d x||^2` (squared norm per sample, mean over the batch). `real_input` must
    be part of the graph of `real_logits` (requires grad); the graph is kept (create_graph) so the penalty trains D."""
    if not real_input.requires_grad:
        raise ValueError("r1_penalty: real_input must require grad (call real.requires_grad_(True) before D(real))")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_input, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()


class LeCamEMA(nn.Module):
    """EMAs of the mean real and fake logits (buffers `ema_real`, `ema_fake`, start at 0; decay 0.999)."""

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay}")
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    @torch.no_grad()
    def update(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        """EMA step with this batch's mean logits, averaged over processes (the EMAs stay identical on every one)."""
        means = mean_over_processes(torch.stack([real_logits.detach().float().mean(),
                                                 fake_logits.detach().float().mean()]))
        self.ema_real.lerp_(means[0], 1 - self.decay)
        self.ema_fake.lerp_(means[1], 1 - self.decay)

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """LeCam term with the current EMAs, then the EMAs are updated with this batch."""
        reg = lecam_reg(real_logits, fake_logits, self.ema_real, self.ema_fake)
        self.update(real_logits, fake_logits)
        return reg


# ---------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class LossConfig:
    """Weights and D-side settings of `TokenizerLoss`. Values are MAGVIT's (v1 config, used by v2) unless noted."""

    # MAGVIT-v2 trains with L2 + perceptual + GAN (paper; L. Yu in vector-quantize-pytorch#78), so L2 is the default.
    recon_loss: str = "l2"  # 'l2' or 'l1' (VQGAN / Open-MAGVIT2 use L1)
    recon_weight: float = 1.0
    perceptual_weight: float = 0.0  # off: no VGG weights ship with the package; MAGVIT uses 0.1 when available
    perceptual_weights_path: str | None = None  # local VGG16 file; None: torch's hub cache; never downloaded
    perceptual_max_frames: int | None = None  # random frames per clip fed to VGG (None: all frames)
    adversarial_weight: float = 0.1  # MAGVIT's adversarial_loss_weight (Open-MAGVIT2: gen_loss_weight 0.1)
    use_adaptive_weight: bool = True  # VQGAN-style balance against the reconstruction gradient at the last layer
    adaptive_weight_max: float = 1e4  # VQGAN's clamp
    temporal_window_lengths: tuple[int, ...] = ()  # e.g. (4, 8): temporal discriminators on L-frame windows
    temporal_adversarial_weight: float = 0.1  # same as the main term; no paper value
    lecam_weight: float = 0.001  # MAGVIT's lecam_weight (Open-MAGVIT2: 0.05)
    lecam_decay: float = 0.999  # LeCam paper's EMA decay
    r1_weight: float = 10.0  # MAGVIT's grad_penalty_cost 10 on E||grad||^2 (= StyleGAN2's gamma 20 with its 1/2)
    r1_interval: int = 4  # lazy R1: applied every r1_interval D steps and scaled by it (StyleGAN2 uses 16)
    disc_dim: int | None = None  # 3D discriminator base width (None: the tokenizer's init_dim)
    disc_max_dim: int | None = None  # its width cap (None: min(tokenizer max_dim, 4 * init_dim))
    temporal_disc_dim: int | None = None  # temporal discriminators' base width (None: half the 3D one, >= 8)
    temporal_disc_max_dim: int | None = None  # their cap (None: half the 3D one)

    def __post_init__(self) -> None:
        if self.recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss must be 'l1' or 'l2'; got {self.recon_loss!r}")
        for name in ("recon_weight", "perceptual_weight", "adversarial_weight", "temporal_adversarial_weight",
                     "lecam_weight", "r1_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if not self.adaptive_weight_max > 0:
            raise ValueError(f"adaptive_weight_max must be > 0; got {self.adaptive_weight_max}")
        if not 0 <= self.lecam_decay < 1:
            raise ValueError(f"lecam_decay must be in [0, 1); got {self.lecam_decay}")
        for name in ("perceptual_max_frames", "disc_dim", "disc_max_dim", "temporal_disc_dim",
                     "temporal_disc_max_dim", "r1_interval"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int{'' if name == 'r1_interval' else ' or None'}; "
                                 f"got {value!r}")
        windows = tuple(self.temporal_window_lengths)
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 2 for n in windows) or len(set(windows)) < len(
                windows):
            raise ValueError(f"temporal_window_lengths must be distinct ints >= 2, e.g. (4, 8); got {windows!r}")
        object.__setattr__(self, "temporal_window_lengths", windows)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["temporal_window_lengths"] = list(self.temporal_window_lengths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError."""
        return config_from_dict(cls, d)


# ---------------------------------------------------------------------------------------------------------------
# breakdowns


class _Breakdown:
    def as_tensors(self) -> dict[str, Tensor]:
        """Every field, still a 0-dim tensor (no device sync; a trainer reads them all at once on logging steps)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_dict(self) -> dict[str, float]:
        """Every field as a Python float (one device sync per field)."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


@dataclass
class GeneratorLossBreakdown(_Breakdown):
    """Detached scalars of one G step. Loss terms are UNWEIGHTED; `total` is the weighted sum that was returned."""

    total: Tensor
    recon: Tensor
    perceptual: Tensor
    adversarial: Tensor  # hinge_g on the 3D discriminator (0 without adversarial)
    temporal_adversarial: Tensor  # mean hinge_g over the temporal discriminators that ran
    adaptive_weight: Tensor  # applied to both adversarial terms (0 without adversarial)
    quantizer_aux: Tensor
    per_sample_entropy: Tensor
    codebook_entropy: Tensor
    commitment: Tensor
    entropy_weight: Tensor
    usage: Tensor
    perplexity: Tensor


@dataclass
class DiscriminatorLossBreakdown(_Breakdown):
    """Detached scalars of one D step; terms are unweighted (3D term + mean over temporal discriminators for lecam and
    r1), `total` is the weighted sum that was returned. Logit means are the 3D discriminator's."""

    total: Tensor
    hinge: Tensor
    temporal_hinge: Tensor
    lecam: Tensor
    r1: Tensor
    real_logits_mean: Tensor
    fake_logits_mean: Tensor


def _scalar(value: Any) -> Tensor:
    return value.detach().float().reshape(()) if isinstance(value, Tensor) else torch.tensor(float(value))


@contextmanager
def _frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Run D in the G step without building grads for its weights (they must not leak into the D step)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# ---------------------------------------------------------------------------------------------------------------
# the composed loss


class TokenizerLoss(nn.Module):
    """Reconstruction + perceptual + quantizer aux + adversarial losses of the MagViT2 tokenizer, and its D step.

    `perceptual` injects a ready `LPIPSDistance` (e.g. `LPIPSDistance(random_init=True)` in tests); otherwise one is
    built from `config.perceptual_weights_path` / torch's hub cache only when `perceptual_weight > 0`, raising
    FileNotFoundError when no local weights exist. `state_dict()` holds the discriminators and LeCam EMAs only.
    """

    def __init__(self, config: LossConfig, tokenizer_config: TokenizerConfig,
                 perceptual: LPIPSDistance | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer_config = tokenizer_config
        disc = DiscriminatorConfig.for_tokenizer(tokenizer_config, config.disc_dim, config.disc_max_dim)
        self.discriminator = Discriminator3D(disc)
        self.lecam = LeCamEMA(config.lecam_decay)
        self.temporal: TemporalDiscriminators | None = None
        self.temporal_lecam = nn.ModuleList()
        if config.temporal_window_lengths:
            dim = config.temporal_disc_dim or max(8, disc.dim // 2)
            temporal = DiscriminatorConfig(image_size=disc.image_size, channels=disc.channels, dim=dim,
                                           max_dim=config.temporal_disc_max_dim or max(dim, disc.max_dim // 2))
            self.temporal = TemporalDiscriminators(config.temporal_window_lengths, temporal)
            self.temporal_lecam.extend(LeCamEMA(config.lecam_decay) for _ in config.temporal_window_lengths)
        self.perceptual: LPIPSDistance | None = None
        if config.perceptual_weight > 0:
            if tokenizer_config.channels != 3:
                raise ValueError(f"the perceptual loss needs RGB (channels=3); got {tokenizer_config.channels}")
            self.perceptual = perceptual if perceptual is not None else LPIPSDistance(config.perceptual_weights_path)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Everything the D optimizer owns: the 3D discriminator and the temporal discriminators."""
        modules = [self.discriminator] + ([self.temporal] if self.temporal is not None else [])
        return [p for m in modules for p in m.parameters()]

    def should_apply_r1(self, d_step: int) -> bool:
        """Lazy R1 cadence: True every `r1_interval` D steps (when r1_weight > 0)."""
        return self.config.r1_weight > 0 and d_step % self.config.r1_interval == 0

    def _pair(self, video: Tensor, recon: Tensor) -> tuple[Tensor, Tensor]:
        channels = self.tokenizer_config.channels
        video, recon = as_video(video, "video", channels), as_video(recon, "recon", channels)
        if video.shape != recon.shape:
            raise ValueError(f"video and recon must have the same shape; got {tuple(video.shape)} vs "
                             f"{tuple(recon.shape)}")
        return video, recon  # (b, c, t, h, w) each

    def perceptual_loss(self, video: Tensor, recon: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean LPIPS-style distance over frames (a random subset of `perceptual_max_frames` frames per batch, drawn
        from `generator`, when the clip is longer). Requires the perceptual network."""
        if self.perceptual is None:
            raise ValueError("perceptual_loss needs perceptual_weight > 0 (a perceptual network)")
        video, recon = self._pair(video, recon)
        k, t = self.config.perceptual_max_frames, video.shape[2]
        if k is not None and t > k:
            if generator is None:
                raise ValueError("perceptual_max_frames picks random frames: pass generator=torch.Generator")
            frames = torch.randperm(t, generator=generator, device=generator.device)[:k].sort().values.cpu()
            video, recon = video[:, :, frames.to(video.device)], recon[:, :, frames.to(video.device)]
        return self.perceptual(recon, video).mean()

    def generator_loss(self, video: Tensor, output: Any, last_layer: Tensor | None = None, step: int = 0,
                       use_adversarial: bool = True,
                       generator: torch.Generator | None = None) -> tuple[Tensor, GeneratorLossBreakdown]:
        """G-step loss. video `(b, c, t, h, w)` (or `(b, c, h, w)`) in [-1, 1]; `output.recon` the same shape;
        `output.quantizer` a QuantizerOutput (aux_loss already includes the entropy schedule at `step`, which is
        otherwise informational here). `last_layer`: the decoder's final weight, needed for the adaptive weight.

        total = recon_weight * recon + perceptual_weight * perceptual + quantizer.aux_loss
                + adaptive * (adversarial_weight * hinge_g(D3d(recon)) + temporal_weight * mean_L hinge_g(D_L(window)))
        The adaptive weight is computed against the sum of the active adversarial terms. With use_adversarial=False
        the adversarial terms are 0 and no discriminator runs; when they run, their weights get no gradients.
        """
        c = self.config
        video, recon = self._pair(video, output.recon)
        recon_term = reconstruction_loss(recon, video, c.recon_loss)
        zero = recon_term.new_zeros(())
        perceptual = self.perceptual_loss(video, recon, generator) if c.perceptual_weight > 0 else zero
        nll = c.recon_weight * recon_term + c.perceptual_weight * perceptual
        quantizer = output.quantizer
        total = nll + quantizer.aux_loss
        adversarial, temporal, weight = zero, zero, zero
        if use_adversarial and (c.adversarial_weight > 0 or c.temporal_adversarial_weight > 0):
            with _frozen(self.discriminator_parameters()):
                if c.adversarial_weight > 0:
                    adversarial = hinge_g_loss(self.discriminator(recon))
                logits = self.temporal(recon, generator) if self.temporal is not None else []
                if logits and c.temporal_adversarial_weight > 0:
                    temporal = torch.stack([hinge_g_loss(v) for v in logits]).mean()
            weight = torch.ones_like(zero)
            active = [g for g in (adversarial, temporal) if g.requires_grad]
            if c.use_adaptive_weight and active and nll.requires_grad and torch.is_grad_enabled():
                if last_layer is None:
                    raise ValueError("use_adaptive_weight=True needs last_layer (tokenizer.last_layer_weight)")
                weight = adaptive_weight(nll, sum(active), last_layer, c.adaptive_weight_max)
            total = total + weight * (c.adversarial_weight * adversarial + c.temporal_adversarial_weight * temporal)
        parts = GeneratorLossBreakdown(
            total=_scalar(total), recon=_scalar(recon_term), perceptual=_scalar(perceptual),
            adversarial=_scalar(adversarial), temporal_adversarial=_scalar(temporal), adaptive_weight=_scalar(weight),
            quantizer_aux=_scalar(quantizer.aux_loss), per_sample_entropy=_scalar(quantizer.per_sample_entropy),
            codebook_entropy=_scalar(quantizer.codebook_entropy), commitment=_scalar(quantizer.commitment),
            entropy_weight=_scalar(quantizer.entropy_weight), usage=_scalar(quantizer.usage),
            perplexity=_scalar(quantizer.perplexity))
        return total, parts

    def forward(self, video: Tensor, recon: Tensor, apply_r1: bool = False,
                generator: torch.Generator | None = None) -> tuple[Tensor, DiscriminatorLossBreakdown]:
        """The D step, `discriminator_loss`, as the module's one entry point (so DDP can wrap the discriminators)."""
        return self.discriminator_loss(video, recon, apply_r1=apply_r1, generator=generator)

    def discriminator_loss(self, video: Tensor, recon: Tensor, apply_r1: bool = False,
                           generator: torch.Generator | None = None) -> tuple[Tensor, DiscriminatorLossBreakdown]:
        """D-step loss on real `video` and the (detached) `recon`, both `(b, c, t, h, w)` (or images) in [-1, 1].

        total = hinge + temporal_hinge + lecam_weight * lecam + [apply_r1] r1_weight * r1_interval * r1, where the
        temporal discriminators judge real and fake on the same random windows (from `generator`) and temporal
        lecam/r1 are averaged over the temporal discriminators that ran. Updates the LeCam EMAs.
        """
        c = self.config
        real, fake = self._pair(video, recon)
        real, fake = real.detach(), fake.detach()
        use_r1 = apply_r1 and c.r1_weight > 0
        if use_r1:
            real.requires_grad_(True)
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        hinge = hinge_d_loss(real_logits, fake_logits)
        lecam = self.lecam(real_logits, fake_logits)
        r1 = r1_penalty(real_logits, real) if use_r1 else hinge.new_zeros(())
        zero = hinge.new_zeros(())
        t_hinge, t_lecam, t_r1 = [], [], []
        if self.temporal is not None:
            real_windows, starts = self.temporal.crop_windows(real, generator)
            fake_windows, _ = self.temporal.crop_windows(fake, starts=starts)
            real_t, fake_t = self.temporal.discriminate(real_windows), self.temporal.discriminate(fake_windows)
            for i in real_t:
                t_hinge.append(hinge_d_loss(real_t[i], fake_t[i]))
                t_lecam.append(self.temporal_lecam[i](real_t[i], fake_t[i]))
                if use_r1:
                    t_r1.append(r1_penalty(real_t[i], real_windows[i]))
        mean = lambda xs: torch.stack(xs).mean() if xs else zero  # noqa: E731
        temporal_hinge = mean(t_hinge)
        lecam, r1 = lecam + mean(t_lecam), r1 + mean(t_r1)
        total = hinge + temporal_hinge + c.lecam_weight * lecam
        if use_r1:
            total = total + c.r1_weight * c.r1_interval * r1
        parts = DiscriminatorLossBreakdown(
            total=_scalar(total), hinge=_scalar(hinge), temporal_hinge=_scalar(temporal_hinge), lecam=_scalar(lecam),
            r1=_scalar(r1), real_logits_mean=_scalar(real_logits.mean()), fake_logits_mean=_scalar(fake_logits.mean()))
        return total, parts
