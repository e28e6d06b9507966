"""Stage one: the MagViT2 video tokenizer (causal 3D CNN + lookup-free quantization), its losses and discriminators."""

from magvit2.config import TokenizerConfig
from magvit2.presets import TOKENIZER_PRESETS, preset_config
from magvit2.quantize import QuantizerOutput
from magvit2.tokenizer import TokenizerOutput, VideoTokenizer

__all__ = ["TOKENIZER_PRESETS", "QuantizerOutput", "TokenizerConfig", "TokenizerOutput", "VideoTokenizer",
           "preset_config"]
