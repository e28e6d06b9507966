"""Stage one: the MagViT2 video tokenizer (causal 3D CNN + lookup-free quantization), its losses and discriminators."""

from magvit2.config import TokenizerConfig
from magvit2.open_magvit2 import OpenMagvit2Tokenizer
from magvit2.open_magvit2_config import OpenMagvit2Config
from magvit2.presets import OPEN_MAGVIT2_PRESETS, TOKENIZER_PRESETS, open_magvit2_preset_config, preset_config
from magvit2.quantize import QuantizerOutput
from magvit2.tokenizer import TokenizerOutput, VideoTokenizer

__all__ = ["OPEN_MAGVIT2_PRESETS", "TOKENIZER_PRESETS", "OpenMagvit2Config", "OpenMagvit2Tokenizer", "QuantizerOutput",
           "TokenizerConfig", "TokenizerOutput", "VideoTokenizer", "VideoTokenizerTrainer",
           "open_magvit2_preset_config", "preset_config"]

# The seed's trainer API lives with the trainers (imports flow scripts -> trainers -> maskgit -> magvit2): it is
# resolved on first access only, so `import magvit2` never imports `trainers`.
_LAZY = {"VideoTokenizerTrainer": "trainers.api", "MaskGitTrainer": "trainers.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'magvit2' has no attribute {name!r}")
