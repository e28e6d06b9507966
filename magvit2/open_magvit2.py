"""Open-MAGVIT2's video tokenizer (TencentARC SEED-Voken) behind our `VideoTokenizer` interface, so its released
weights, converted exactly, drive tokenization, stage-two training and the pipeline unchanged.

Why a subclass (and not a `TokenizerConfig` switch): the two architectures share no layers (zero vs first-frame
time padding, GroupNorm over all frames vs per frame, depth-to-space upsampling, an adaptive norm fed by the
quantized latent, a different bit order), so one config would be two configs glued together and every field of
ours would need an "ignored by open_magvit2" footnote. `OpenMagvit2Tokenizer(VideoTokenizer)` builds its own
encoder/decoder from its own `OpenMagvit2Config` and inherits everything above them: input checks, `latent_shape`,
`num_frames_for`, `tokenize`, `decode_from_code_indices`, `reconstruct`, `forward`, `save_pretrained`. Callers
(`isinstance(x, VideoTokenizer)`, trainers, pipeline) need no change; `VideoTokenizer.from_pretrained` returns this
class for a folder whose config says `"architecture": "open_magvit2"`.

Pixels: `(b, 3, 1 + 4k, h, w)` float in [-1, 1] (images `(b, 3, h, w)`) for the released video model (4x time,
8x space); codes `(b, 1 + k, h/8, w/8)` in [0, 2^18). Code index = sum_i [latent_i > 0] * 2^i over the latent
channels i (little-endian; their convention), so our codes equal theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from magvit2.open_magvit2_config import OpenMagvit2Config
from magvit2.open_magvit2_layers import Decoder, Encoder, ResBlock
from magvit2.quantize import LFQuantizer, QuantizerOutput
from magvit2.serialization import load_state_strict
from magvit2.tokenizer import VideoTokenizer

# Non-learned buffers an Open-MAGVIT2 LFQ may leave under `quantize.*` (bit masks, the +-1 codebook): not weights.
QUANTIZER_BUFFERS = ("mask", "zero", "codebook", "pre_mask", "post_mask")
EMA_PREFIX = "model_ema."


class LittleEndianLFQuantizer(nn.Module):
    """`magvit2.quantize.LFQuantizer` with Open-MAGVIT2's bit order: channel i is bit i (channel 0 least
    significant). The LFQ underneath reads channel 0 as the most significant bit, so the channels are reversed on
    the way in and back on the way out: index(z) = LFQ index(flip(z)) = sum_i [z_i > 0] 2^i, and the quantized
    latent is sign(z) (+-1) in the original channel order."""

    def __init__(self, config: OpenMagvit2Config):
        super().__init__()
        self.codebook_size = config.codebook_size
        self.lfq = LFQuantizer(config.z_channels, config.quantizer_config())

    def forward(self, x: Tensor, step: int | None = None) -> QuantizerOutput:
        """x: (b, z_channels, t, h, w) -> QuantizerOutput; `quantized` is +-1 (straight-through in training)."""
        out = self.lfq(x.flip(1), step=step)  # channel order reversed: bit i of the index <- channel i
        return dataclasses.replace(out, quantized=out.quantized.flip(1))

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(b, t, h, w) long -> (b, z_channels, t, h, w) of +-1: exactly the eval-mode `quantized` for them."""
        return self.lfq.indices_to_codes(indices).flip(1)


class OpenMagvit2Tokenizer(VideoTokenizer):
    """Open-MAGVIT2's causal 3D CNN tokenizer + lookup-free quantization (no projections, 2^z_channels codes).

    Build it from an `OpenMagvit2Config` or the same keywords, e.g. `OpenMagvit2Tokenizer(image_size=128)` is their
    released video model's architecture; `from_open_magvit2(state, config)` loads their weights.
    """

    def __init__(self, config: OpenMagvit2Config | None = None, **kwargs):
        nn.Module.__init__(self)  # not VideoTokenizer.__init__: that one builds our own architecture
        if config is None:
            config = OpenMagvit2Config(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either a config or keyword arguments, not both; got extra {sorted(kwargs)}")
        if not isinstance(config, OpenMagvit2Config):
            raise ValueError(f"OpenMagvit2Tokenizer needs an OpenMagvit2Config; got {type(config).__name__}")
        self.config = config
        self.time_compression = config.time_compression
        self.space_compression = config.space_compression
        self.codebook_size = config.codebook_size
        self.has_cond_layers = False
        self.latent_dim = config.z_channels
        self.encoder = Encoder(config)
        self.quantizer = LittleEndianLFQuantizer(config)
        self.decoder = Decoder(config)

    def encode(self, video: Tensor, cond: Tensor | None = None) -> Tensor:
        """(b, c, 1 + k*f, h, w) in [-1, 1] (or images (b, c, h, w)) -> latents (b, z_channels, 1 + k, h/s, w/s)."""
        video, _ = self._check_video(video)
        self._cond(cond, "", video.shape[0])  # raises if a cond is given: this architecture takes none
        return self.encoder(video.to(self.dtype))

    def decode(self, quantized: Tensor, cond: Tensor | None = None) -> Tensor:
        """(b, z_channels, t', h', w') quantized latents (+-1) -> video (b, c, 1 + (t'-1)*f, h, w), ~[-1, 1]."""
        self._cond(cond, "", quantized.shape[0])
        if quantized.ndim != 5 or quantized.shape[1] != self.latent_dim:
            raise ValueError(f"expected quantized latents (b, {self.latent_dim}, t', h', w'); got "
                             f"{tuple(quantized.shape)}")
        return self.decoder(quantized.to(self.dtype))

    @property
    def last_layer_weight(self) -> Tensor:
        """Weight of the decoder's output conv (where the adaptive GAN weight balances gradients)."""
        return self.decoder.conv_out.conv_1.weight

    encoder_prefixes = ("encoder.", "quantizer.lfq.lfq.project_in.")  # what decides the codes (encoder_parameters)

    def checkpoint_blocks(self) -> list[nn.Module]:
        """Every residual block of the encoder and decoder (their mid stacks and levels)."""
        return [m for m in (*self.encoder.modules(), *self.decoder.modules()) if isinstance(m, ResBlock)]

    # loading Open-MAGVIT2's own weights ------------------------------------------------------------------------

    @classmethod
    def from_open_magvit2(cls, checkpoint: Mapping[str, Any], config: OpenMagvit2Config, ema: bool = False,
                          source: str = "checkpoint") -> OpenMagvit2Tokenizer:
        """A tokenizer holding the weights of an Open-MAGVIT2 checkpoint (already read into memory): a Lightning
        dict with `state_dict`, or a bare state dict. `ema` picks the EMA copies. Any missing, unexpected or
        mis-shaped tensor raises ValueError naming the key (and `source`)."""
        model = cls(config)
        expected = [k for k in model.state_dict() if k.startswith(("encoder.", "decoder."))]
        state = open_magvit2_state_dict(checkpoint, expected, ema=ema, source=source)
        ours = {k: v for k, v in model.state_dict().items() if k.startswith("quantizer.")}  # our LFQ's bit mask
        load_state_strict(model, {**state, **ours}, source, what="Open-MAGVIT2 weights")
        return model.eval()


def _state_of(checkpoint: Mapping[str, Any], source: str) -> Mapping[str, Tensor]:
    """The flat {name: tensor} inside a checkpoint: its `state_dict` entry (Lightning) or the mapping itself."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source}: expected a state dict or a Lightning checkpoint dict; got "
                         f"{type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: 'state_dict' must be a mapping of tensors; got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{source}: key {key} holds a non-tensor ({type(value).__name__}); expected a state "
                             "dict, or a Lightning checkpoint with one under 'state_dict'")
    return state


def _ignored(key: str) -> bool:
    """Keys that are not tokenizer weights: the GAN loss (discriminator, LPIPS), EMA copies (picked separately),
    non-learned quantizer buffers."""
    if key.startswith(("loss.", EMA_PREFIX)):
        return True
    return key.startswith("quantize.") and key.removeprefix("quantize.") in QUANTIZER_BUFFERS


def open_magvit2_state_dict(checkpoint: Mapping[str, Any], expected: Iterable[str], ema: bool = False,
                            source: str = "checkpoint") -> dict[str, Tensor]:
    """Map an Open-MAGVIT2 checkpoint onto `OpenMagvit2Tokenizer` names (the pure key mapping; no file I/O).

    Their `encoder.*` / `decoder.*` names are ours. With `ema`, each expected name `K` is read from
    `model_ema.` + K without its dots (how their EMA stores copies). `loss.*`, other `model_ema.*` entries and
    non-learned `quantize.*` buffers are dropped; any other key is kept, so strict loading reports it as unexpected.
    """
    state = _state_of(checkpoint, source)
    if not ema:
        return {k: v for k, v in state.items() if not _ignored(k)}
    ema_keys = [k for k in state if k.startswith(EMA_PREFIX)]
    if not ema_keys:
        raise ValueError(f"{source}: no EMA weights (no {EMA_PREFIX}* keys); convert without --ema")
    expected = list(expected)
    flat = {EMA_PREFIX + k.replace(".", ""): k for k in expected}
    assert len(flat) == len(expected), "two parameter names collide once their dots are removed"
    out = {}
    for ema_key, key in flat.items():
        if ema_key not in state:
            raise ValueError(f"{source}: no EMA copy of {key} (looked for {ema_key})")
        out[key] = state[ema_key]
    out.update({k: v for k, v in state.items() if not _ignored(k) and not k.startswith(("encoder.", "decoder."))})
    return out

