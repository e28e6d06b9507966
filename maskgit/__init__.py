"""Stage two: a text-conditioned bidirectional MaskGit transformer over frozen MagViT2 tokenizer codes."""

from magvit2.utils import export_to_video

from .config import MaskGitConfig, factor_vocab_sizes
from .lora import LoraAdapter, LoraSettings
from .objective import MaskedLossStats, masked_token_loss, random_token_mask
from .pipeline import TextToVideoPipeline
from .pipeline_output import TextToVideoPipelineOutput
from .pipeline_settings import PipelineDefaults
from .presets import MASKGIT_PRESETS, maskgit_preset
from .sampler import SamplerStep, filter_logits, guidance_at, make_guided_logits_fn, sample
from .schedule import SCHEDULES, mask_ratio, num_to_mask, sample_mask_ratios, train_num_masked
from .text import TextEmbedding, TextEncoder, TinyTextEncoder, build_text_encoder
from .text_hf import HFTextEncoder, TextEncoderNotFoundError, default_text_encoder
from .transformer import MaskGitTransformer, merge_codes, split_codes

__all__ = [
    "MASKGIT_PRESETS",
    "SCHEDULES",
    "HFTextEncoder",
    "LoraAdapter",
    "LoraSettings",
    "MaskGitConfig",
    "MaskGitTransformer",
    "MaskedLossStats",
    "PipelineDefaults",
    "SamplerStep",
    "TextEmbedding",
    "TextEncoder",
    "TextEncoderNotFoundError",
    "TextToVideoPipeline",
    "TextToVideoPipelineOutput",
    "TinyTextEncoder",
    "build_text_encoder",
    "default_text_encoder",
    "export_to_video",
    "factor_vocab_sizes",
    "filter_logits",
    "guidance_at",
    "make_guided_logits_fn",
    "mask_ratio",
    "masked_token_loss",
    "maskgit_preset",
    "merge_codes",
    "num_to_mask",
    "random_token_mask",
    "sample",
    "sample_mask_ratios",
    "split_codes",
    "train_num_masked",
]
