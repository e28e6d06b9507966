"""The MagViT2 video tokenizer: a causal 3D CNN encoder/decoder around a lookup-free (or FSQ) quantizer.

Pixels are float `(b, c, t, h, w)` in [-1, 1] (an image `(b, c, h, w)` is a 1-frame video). With time compression
f, a video of `1 + k*f` frames gives `1 + k` latent frames: the first frame forms a latent frame on its own (exactly
what an image gives) and every later latent frame covers the next f frames. Two ways, `config.time_padding`:
"causal" (the strided causal convs map 1 + 2m frames to 1 + m, so every level works on exactly the frames there
are) or "prepend" (f - 1 copies of the first frame are prepended, every level works on (k + 1) * f frames and the
decoder drops the first f - 1). Causal convs pad time with copies of the first frame (not zeros, unlike
Open-MAGVIT2), and all norms are per frame, so latents never depend on later frames.
This module is architecture only: losses live in `magvit2.losses`, discriminators in `magvit2.discriminator`, input
checks in `magvit2.tokenizer_inputs`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit2.attention import GateLoopTimeBlock, LinearSpaceAttentionBlock, SpaceAttentionBlock, TimeAttentionBlock
from magvit2.config import TokenizerConfig
from magvit2.hub import PretrainedMixin
from magvit2.layers import (
    CausalConv3d,
    CondResidualBlock,
    FrameGroupNorm,
    ResidualBlock,
    SpaceDownsample,
    SpaceUpsample,
    TimeDownsample,
    TimeUpsample,
    conv_memory_format,
    sequential_forward,
)
from magvit2.layers_seed import (
    PointwiseSpaceUpsample,
    PointwiseTimeUpsample,
    SingleConvResidualBlock,
    TimeOnlyDownsample,
)
from magvit2.model_card import CardSpec
from magvit2.model_paths import ModelKind
from magvit2.quantize import QuantizerOutput, build_quantizer
from magvit2.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_model_dir,
    load_state_strict,
    read_model_config,
    save_model_dir,
)
from magvit2.tokenizer_inputs import check_codes, check_num_frames, check_video
from magvit2.torch_utils import checkpoint_forward, eval_mode, module_device, module_dtype

KIND = "VideoTokenizer"  # the `_kind` of a tokenizer folder's config.json
# where a tokenizer is found besides its own folder: a tokenizer run's export, a pipeline's component, a MaskGit
# run's exported pipeline (`magvit2.model_paths`)
TOKENIZER_KIND = ModelKind(KIND, locations=("tokenizer", "pipeline/tokenizer"), what="tokenizer")


@dataclass
class TokenizerOutput:
    recon: Tensor  # (b, c, t, h, w), ~[-1, 1]
    codes: Tensor  # (b, t', h', w') long
    quantizer: QuantizerOutput


def _mixing_block(name: str, dim: int, config: TokenizerConfig, dim_cond: int | None) -> nn.Module:
    """Build one shape-preserving layer by name (encoder and decoder get separate instances)."""
    c = config
    cond = dim_cond if name.startswith("cond_") else None
    base = name.removeprefix("cond_")
    if base == "residual":
        if c.block_style == "seed":
            return SingleConvResidualBlock(dim, c.residual_conv_kernel_size, cond)
        if cond is not None:
            return CondResidualBlock(dim, cond, c.residual_conv_kernel_size, c.norm_groups)
        return ResidualBlock(dim, c.residual_conv_kernel_size, c.norm_groups)
    if base == "attend_space":
        return SpaceAttentionBlock(dim, c.attn_heads, c.attn_dim_head, c.attn_dropout, c.ff_mult, cond)
    if base == "linear_attend_space":
        return LinearSpaceAttentionBlock(dim, c.linear_attn_heads, c.linear_attn_dim_head, c.ff_mult, cond)
    if base == "attend_time":
        return TimeAttentionBlock(dim, c.attn_heads, c.attn_dim_head, c.attn_dropout, c.ff_mult, cond)
    if base == "gateloop_time":
        return GateLoopTimeBlock(dim, c.ff_mult, cond)
    raise ValueError(f"unknown layer {name!r}")  # unreachable: the config validated names


# (block_style, compress layer) -> (encoder downsampler, decoder upsampler); each built as cls(dim_in, dim_out)
RESAMPLERS = {
    ("paper", "compress_space"): (SpaceDownsample, SpaceUpsample),
    ("paper", "compress_time"): (TimeDownsample, TimeUpsample),
    ("seed", "compress_space"): (SpaceDownsample, PointwiseSpaceUpsample),
    ("seed", "compress_time"): (TimeOnlyDownsample, PointwiseTimeUpsample),
}


class VideoTokenizer(nn.Module, PretrainedMixin):
    """Encode videos/images to discrete codes and decode them back.

    Build it from a `TokenizerConfig` or with the same keywords (seed-compatible):
    `VideoTokenizer(image_size=128, init_dim=64, max_dim=512, codebook_size=2**18, layers=(...), channels=3)`.
    `.to(torch.bfloat16)` runs encoder and decoder in bf16; the quantizer keeps float32 weights and math
    (`magvit2.quantize`) and hands back latents in the model's dtype.
    """

    model_kind = TOKENIZER_KIND

    def __init__(self, config: TokenizerConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = TokenizerConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either a config or keyword arguments, not both; got extra {sorted(kwargs)}")
        self.config = c = config
        self.time_compression = c.time_compression
        self.space_compression = c.space_compression
        self.codebook_size = c.effective_codebook_size

        dim_cond = None
        if c.dim_cond is not None:
            dim_cond = int(c.dim_cond * c.dim_cond_expansion_factor)
            self.encoder_cond_mlp = nn.Sequential(nn.Linear(c.dim_cond, dim_cond), nn.SiLU())
            self.decoder_cond_mlp = nn.Sequential(nn.Linear(c.dim_cond, dim_cond), nn.SiLU())
        self.has_cond_layers = any(n.startswith("cond_") for n in c.layer_names)

        dim = c.init_dim
        max_dim = c.max_dim if c.max_dim is not None else float("inf")
        self.conv_in = CausalConv3d(c.channels, dim, c.input_conv_kernel_size)
        encoder, decoder = [], []
        for spec in c.layers:
            name, arg = (spec, None) if isinstance(spec, str) else spec
            if name == "consecutive_residual":
                for _ in range(arg):
                    encoder.append(_mixing_block("residual", dim, c, dim_cond))
                    decoder.insert(0, _mixing_block("residual", dim, c, dim_cond))
            elif name in ("compress_space", "compress_time"):
                dim_out = arg if arg is not None else int(min(dim * 2, max_dim))
                down, up = RESAMPLERS[c.block_style, name]
                if name == "compress_time":
                    alone = c.time_padding == "causal"
                    down, up = down(dim, dim_out, alone), up(dim_out, dim, alone)
                else:
                    down, up = down(dim, dim_out), up(dim_out, dim)
                encoder.append(down)
                decoder.insert(0, up)
                dim = dim_out
            else:
                encoder.append(_mixing_block(name, dim, c, dim_cond))
                decoder.insert(0, _mixing_block(name, dim, c, dim_cond))
        self.latent_dim = dim
        self.encoder_layers = nn.ModuleList(encoder)
        self.encoder_norm = FrameGroupNorm(dim, c.norm_groups)
        self.quantizer = build_quantizer(dim, c)
        self.decoder_layers = nn.ModuleList(decoder)
        self.decoder_norm = FrameGroupNorm(c.init_dim, c.norm_groups)
        self.conv_out = CausalConv3d(c.init_dim, c.channels, c.output_conv_kernel_size)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the encoder/decoder weights (the quantizer's stay float32)."""
        return module_dtype(self, skip=("quantizer.",))

    @property
    def device(self) -> torch.device:
        return module_device(self)

    # shapes and validation -----------------------------------------------------------------------------------------

    def latent_shape(self, num_frames: int) -> tuple[int, int, int]:
        """(t', h', w') of the codes for a clip of `num_frames` frames at the configured image size."""
        self._check_num_frames(num_frames)
        h, w = self.config.image_size
        s = self.space_compression
        return (1 + (num_frames - 1) // self.time_compression, h // s, w // s)

    def num_frames_for(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames: 1 + (t' - 1) * f."""
        return 1 + (latent_frames - 1) * self.time_compression

    def _check_num_frames(self, t: int) -> None:
        check_num_frames(t, self.time_compression)

    def _check_video(self, video: Tensor) -> tuple[Tensor, bool]:
        """Validate pixels; returns (video as (b, c, t, h, w), whether the input was an image batch)."""
        return check_video(video, self.config.channels, self.config.image_size, self.time_compression)

    def _cond(self, cond: Tensor | None, mlp_name: str, batch: int) -> Tensor | None:
        if cond is None:
            if self.has_cond_layers:
                raise ValueError(f"this tokenizer has cond_* layers; pass cond of shape ({batch}, "
                                 f"{self.config.dim_cond})")
            return None
        if self.config.dim_cond is None:
            raise ValueError("got cond, but this tokenizer was built without dim_cond")
        if cond.shape != (batch, self.config.dim_cond):
            raise ValueError(f"expected cond of shape ({batch}, {self.config.dim_cond}); got {tuple(cond.shape)}")
        return getattr(self, mlp_name)(cond)

    # encode / quantize / decode ----------------------------------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool = True) -> VideoTokenizer:
        """Recompute each encoder/decoder block's activations in the backward (less memory, ~30% more compute)
        while training; the same outputs and gradients. Returns self."""
        for block in self.checkpoint_blocks():
            checkpoint_forward(block, enabled)
        return self

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The blocks `set_gradient_checkpointing` recomputes (an architecture subclass names its own)."""
        return [*self.encoder_layers, *self.decoder_layers]

    def encode(self, video: Tensor, cond: Tensor | None = None) -> Tensor:
        """(b, c, 1 + k*f, h, w) in [-1, 1] (or images (b, c, h, w)) -> continuous latents (b, d, 1 + k, h', w')."""
        video, _ = self._check_video(video)
        video = video.to(self.dtype)  # a bf16 model takes fp32 pixels too
        cond = self._cond(cond, "encoder_cond_mlp", video.shape[0])
        x = video.contiguous(memory_format=conv_memory_format(video))  # (b, c, 1 + k*f, h, w)
        if self.config.time_padding == "prepend":
            pad = video[:, :, :1].expand(-1, -1, self.time_compression - 1, -1, -1)  # copies of the first frame
            x = torch.cat([pad, video], dim=2)  # (b, c, (k+1)*f, h, w): the first frame forms a latent frame alone
        x = self.conv_in(x)
        x = sequential_forward(self.encoder_layers, x, cond)
        return self.encoder_norm(x)

    def quantize(self, latents: Tensor, step: int | None = None) -> QuantizerOutput:
        """(b, d, t', h', w') latents -> QuantizerOutput (codes, straight-through values, entropy/commitment)."""
        return self.quantizer(latents, step=step)

    def decode(self, quantized: Tensor, cond: Tensor | None = None) -> Tensor:
        """(b, d, t', h', w') quantized latents -> video (b, c, 1 + (t'-1)*f, h, w), approximately in [-1, 1]."""
        cond = self._cond(cond, "decoder_cond_mlp", quantized.shape[0])
        x = quantized.to(self.dtype).contiguous(memory_format=conv_memory_format(quantized))
        x = sequential_forward(self.decoder_layers, x, cond)  # (b, init_dim, 1 + (t'-1)*f or t'*f, h, w)
        x = self.conv_out(F.silu(self.decoder_norm(x)))
        if self.config.time_padding == "prepend":
            x = x[:, :, self.time_compression - 1 :]  # drop the frames that decode the prepended padding
        return x.contiguous()

    def reconstruct(self, video: Tensor, cond: Tensor | None = None, step: int | None = None) -> TokenizerOutput:
        """Full pass for training: (b, c, t, h, w) in [-1, 1] -> TokenizerOutput(recon, codes, quantizer stats)."""
        video, is_image = self._check_video(video)
        q = self.quantize(self.encode(video, cond), step=step)
        recon = self.decode(q.quantized, cond)
        return TokenizerOutput(recon.squeeze(2) if is_image else recon, q.indices, q)

    def forward(self, video: Tensor, cond: Tensor | None = None, return_recon: bool = False,
                return_codes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(b, c, t, h, w) or (b, c, h, w) in [-1, 1] -> reconstruction of the same shape (seed-compatible flags:
        `return_recon=True` also gives the reconstruction; `return_codes=True` alone gives the codes (b, t', h', w')
        without decoding; both give `(codes, recon)`)."""
        if return_codes and not return_recon:
            video, _ = self._check_video(video)
            return self.quantize(self.encode(video, cond)).indices
        out = self.reconstruct(video, cond)
        return (out.codes, out.recon) if return_codes else out.recon

    # discrete interface ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def tokenize(self, video: Tensor, cond: Tensor | None = None) -> Tensor:
        """(b, c, 1 + k*f, h, w) in [-1, 1] (or images) -> codes LongTensor (b, 1 + k, h', w').

        Runs in eval mode and restores each module's train/eval mode afterwards.
        """
        with eval_mode(self):
            return self.quantize(self.encode(video, cond)).indices

    def decode_from_code_indices(self, codes: Tensor, cond: Tensor | None = None) -> Tensor:
        """Codes (b, t', h', w') or flattened (b, t'*h'*w') -> video (b, c, 1 + (t'-1)*f, h, w) in ~[-1, 1]."""
        codes = check_codes(codes, self.latent_shape(1)[1:], self.codebook_size)
        return self.decode(self.quantizer.indices_to_codes(codes).to(self.dtype), cond)

    # what maps pixels to codes: the stem, the encoder blocks and norm, the conditioning MLP, the quantizer's input
    # projection (FSQ and LFQ project the latent width to their code dimensions first)
    encoder_prefixes = ("conv_in.", "encoder_layers.", "encoder_norm.", "encoder_cond_mlp.",
                        "quantizer.fsq.project_in.", "quantizer.lfq.project_in.")

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The weights that decide the codes (`encoder_prefixes`): freezing them keeps every clip's codes fixed
        while the decoder trains (decoder-only fine-tuning)."""
        return [p for name, p in self.named_parameters() if name.startswith(self.encoder_prefixes)]

    @property
    def last_layer_weight(self) -> Tensor:
        """Weight of the decoder's output conv: the VQGAN adaptive GAN weight balances gradients here."""
        return self.conv_out.conv.weight

    # persistence ---------------------------------------------------------------------------------------------------
    # save_pretrained / from_pretrained / push_to_hub: `magvit2.hub.PretrainedMixin`; the folder format here.

    def _save_pretrained(self, directory: Path, training: dict[str, Any] | None = None) -> None:
        """`config.json` + `model.safetensors`. Of `training`, the trainer's export keys (`num_frames`,
        `frame_stride` of its clips, `step`) are recorded beside the config so commands can default to what the
        tokenizer was trained on (`training_info`); the whole record goes into the model card."""
        known = {k: v for k, v in {**(self.pretrained_training or {}), **(training or {})}.items()
                 if k in TRAINING_KEYS}
        extra = {"training": _check_training(known, "training")} if known else None
        save_model_dir(directory, KIND, self.config.to_dict(), self.state_dict(), extra=extra)

    @staticmethod
    def training_info(directory: str | Path) -> dict[str, int]:
        """What a tokenizer folder says about its training clips (`num_frames`, `frame_stride`, `step`; each key
        only when recorded; {} for folders written without it). Wrong types are errors naming the file and key."""
        payload = read_model_config(directory, KIND)
        return _check_training(payload.get("training") or {}, f"{Path(directory) / CONFIG_NAME}: training")

    @classmethod
    def _load_pretrained(cls, directory: Path, *, from_hub: bool, device: torch.device | str | None,
                         map_location: str | torch.device | None = None) -> VideoTokenizer:
        """A tokenizer folder -> the model in eval mode (no pickle; unknown config keys are rejected). A config
        with an `architecture` key (see `ARCHITECTURES`) gives that subclass, e.g. `OpenMagvit2Tokenizer`.
        `map_location`: the older spelling of `device=`."""
        config, state = load_model_dir(directory, KIND)
        model_cls, config_cls = _architecture(config.get("architecture"), directory)
        if not issubclass(model_cls, cls):
            raise ValueError(f"{directory} holds a {model_cls.__name__}, not a {cls.__name__}")
        model = model_cls(config_cls.from_dict(config))
        load_state_strict(model, state, Path(directory) / WEIGHTS_NAME)
        model.pretrained_training = cls.training_info(directory)  # for the model card
        if map_location is not None and device is None:
            model.to(map_location)
        return model.eval()

    pretrained_training: dict[str, int] | None = None

    def card_spec(self) -> CardSpec:
        return CardSpec(kind="video tokenizer (MAGVIT-v2: causal 3D CNN + lookup-free quantization)",
                        import_line="from magvit2 import VideoTokenizer", class_name="VideoTokenizer",
                        config=self.config.to_dict(), tags=["video", "video-tokenizer", "magvit2"],
                        training=dict(self.pretrained_training or {}),
                        usage=f"codes = tokenizer.tokenize(video)  # video (b, 3, 1 + {self.time_compression}k, "
                              f"{self.config.image_size[0]}, {self.config.image_size[1]}) in [-1, 1]\n"
                              "video = tokenizer.decode_from_code_indices(codes)")


TRAINING_KEYS = ("num_frames", "frame_stride", "step")  # what a tokenizer folder may record about its training


def _check_training(training: object, where: str) -> dict[str, int]:
    if not isinstance(training, dict):
        raise ValueError(f"{where} must be a mapping of {list(TRAINING_KEYS)}; got {type(training).__name__}")
    for key, value in training.items():
        if key not in TRAINING_KEYS:
            raise ValueError(f"{where}.{key} is not a known key; known: {list(TRAINING_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "step" else 1):
            raise ValueError(f"{where}.{key} must be an int >= {0 if key == 'step' else 1}; got {value!r}")
    return dict(training)


# Other architectures behind the `VideoTokenizer` interface: config.json's "architecture" -> (module, model class,
# config class). A folder without the key holds this module's own architecture.
ARCHITECTURES = {"open_magvit2": ("magvit2.open_magvit2", "OpenMagvit2Tokenizer", "OpenMagvit2Config")}


def _architecture(name: str | None, directory: str | Path) -> tuple[type[VideoTokenizer], type]:
    if name is None:
        return VideoTokenizer, TokenizerConfig
    if name not in ARCHITECTURES:
        raise ValueError(f"{directory}: unknown tokenizer architecture {name!r}; this package knows "
                         f"{sorted(ARCHITECTURES)} (upgrade magvit2-maskgit?)")
    module_name, model_name, config_name = ARCHITECTURES[name]
    module = importlib.import_module(module_name)
    return getattr(module, model_name), getattr(module, config_name)
