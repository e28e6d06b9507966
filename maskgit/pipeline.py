"""Text-to-video: prompts -> text embeddings -> MaskGIT decoding over tokenizer codes -> pixels.

`TextToVideoPipeline` composes the three parts (diffusers-style components):

* `tokenizer`    a `magvit2.VideoTokenizer` (frozen): codes <-> pixels; also tokenizes prime videos;
* `text_encoder` a `maskgit.text.TextEncoder` (frozen): prompts -> `TextEmbedding`;
* `transformer`  a `maskgit.MaskGitTransformer`: masked codes + text -> logits; decoded by `maskgit.sampler.sample`.

Sampling defaults live in `maskgit.pipeline_settings.PipelineDefaults`; the folder format written by
`save_pretrained` (`pipeline.json` + `model_index.json` + `tokenizer/` + `transformer/`) in `maskgit.pipeline_folder`;
what every diffusers pipeline has (`components`, `to`, `dtype`, `device`, progress bar, model CPU offload) in
`maskgit.pipeline_base`; videos longer than the transformer's grid (sliding windows) and the decoding loop over
windows in `maskgit.windows`; checks of what a call is given in `maskgit.pipeline_inputs`.

Classifier-free guidance follows diffusers / aMUSEd: `logits = uncond + s * (cond - uncond)` per step, with both
halves computed in one batched pass. s = 1: no guidance (conditional only, the unconditional half is skipped);
s = 0: unconditional; s > 1: stronger prompt adherence. The unconditional half sees the transformer's learned null
text embedding, or the negative prompt when one is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from magvit2.hub import PretrainedMixin
from magvit2.model_card import CardSpec
from magvit2.tokenizer import VideoTokenizer
from magvit2.torch_utils import eval_mode

from .lora_loader import LoraLoaderMixin
from .pipeline_base import PipelineBase
from .pipeline_folder import (
    PIPELINE_CONFIG,
    PIPELINE_MODEL_KIND,
    TOKENIZER_DIR,
    TRANSFORMER_DIR,
    load_components,
    pipeline_card_spec,
    pipeline_config,
    write_model_index,
    write_pipeline_config,
)
from .pipeline_inputs import (
    as_generators,
    as_prompt_list,
    check_frame_size,
    check_prime_codes,
    check_prime_span,
    embedding_from,
    negative_embedding,
    negative_prompt_list,
)
from .pipeline_output import (
    TextToVideoPipelineOutput,
    check_callback,
    check_output_type,
    make_step_fn,
    postprocess_video,
)
from .pipeline_settings import PipelineDefaults
from .text import TextEmbedding, TextEncoder
from .transformer import MaskGitTransformer
from .windows import Window, plan_windows, sample_windows

StepCallback = Callable[[int, int, Tensor], None]  # (step, num_steps, codes (b, t', h', w') with [MASK] = mask id)
logger = logging.getLogger(__name__)


class TextToVideoPipeline(PipelineBase, LoraLoaderMixin, PretrainedMixin):
    """Prompts -> videos with a MagViT2 tokenizer, a text encoder and a MaskGit transformer (LoRA adapters: the
    `maskgit.lora_loader.LoraLoaderMixin` methods, `load_lora_weights` ...).

    Compatibility is checked here, once: the transformer's vocabulary must equal the tokenizer's codebook, the
    tokenizer's latent frame (h', w') must fit the transformer's grid, and the text width must match `text_dim`.
    """

    model_kind = PIPELINE_MODEL_KIND

    def __init__(self, tokenizer: VideoTokenizer, text_encoder: TextEncoder, transformer: MaskGitTransformer,
                 defaults: PipelineDefaults | None = None):
        for name, value, cls in (("tokenizer", tokenizer, VideoTokenizer), ("text_encoder", text_encoder, TextEncoder),
                                 ("transformer", transformer, MaskGitTransformer)):
            if not isinstance(value, cls):
                raise ValueError(f"{name} must be a {cls.__name__}; got {type(value).__name__}")
        defaults = PipelineDefaults() if defaults is None else defaults
        if not isinstance(defaults, PipelineDefaults):
            raise ValueError(f"defaults must be a PipelineDefaults; got {type(defaults).__name__}")
        if tokenizer.has_cond_layers:
            raise ValueError("the pipeline needs an unconditioned tokenizer; this one has cond_* layers")
        if tokenizer.codebook_size != transformer.config.codebook_size:
            raise ValueError(f"vocabulary mismatch: the tokenizer has {tokenizer.codebook_size} codes but the "
                             f"transformer was built for codebook_size={transformer.config.codebook_size}; "
                             f"train the transformer on this tokenizer's codes")
        _, h, w = tokenizer.latent_shape(1)
        if (h, w) != tuple(transformer.config.latent_shape[1:]):
            raise ValueError(f"latent grid mismatch: the tokenizer gives {h}x{w} codes per frame but the transformer "
                             f"was built for {transformer.config.latent_shape[1]}x{transformer.config.latent_shape[2]}")
        transformer.check_compatible(tokenizer.codebook_size, (1, h, w))
        if text_encoder.dim != transformer.config.text_dim:
            raise ValueError(f"text width mismatch: the text encoder ({text_encoder.spec!r}) gives "
                             f"{text_encoder.dim}-d embeddings but the transformer expects "
                             f"text_dim={transformer.config.text_dim}")
        self.tokenizer, self.text_encoder, self.transformer = tokenizer, text_encoder, transformer
        self.defaults = defaults
        if defaults.num_frames is not None:
            self.check_num_frames(defaults.num_frames)

    # shapes -----------------------------------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """What `model_index.json` holds (class, version, each component as [library, class]) plus the text
        encoder's settings, the sampling defaults and the frame size / longest single window."""
        return pipeline_config(self)

    @property
    def max_num_frames(self) -> int:
        """The longest clip one window of the transformer's latent grid holds: 1 + (t' - 1) * f. Longer videos are
        generated window by window (`maskgit.windows`)."""
        return self.tokenizer.num_frames_for(self.transformer.config.latent_shape[0])

    def check_num_frames(self, num_frames: int) -> int:
        """Latent frames t' of a `num_frames` clip; ValueError unless num_frames = 1 + k*f."""
        f = self.tokenizer.time_compression
        if isinstance(num_frames, bool) or not isinstance(num_frames, int):
            raise ValueError(f"num_frames must be an int 1 + {f}k; got {num_frames!r}")
        if num_frames < 1 or (num_frames - 1) % f:
            k = max((num_frames - 1) // f, 0)
            hint = f"try {1 + f * k} or {1 + f * (k + 1)}" if num_frames > 1 else f"try 1 or {1 + f}"
            raise ValueError(f"num_frames={num_frames} is not 1 + {f}k; {hint}")
        return 1 + (num_frames - 1) // f

    def latent_grid(self, num_frames: int) -> tuple[int, int, int]:
        """(t', h', w') of one window of `num_frames`; ValueError unless num_frames = 1 + k*f and t' fits the
        transformer (longer videos: `plan`)."""
        t = self.check_num_frames(num_frames)
        if t > self.transformer.config.latent_shape[0]:
            raise ValueError(f"num_frames={num_frames} needs {t} latent frames but the transformer holds at most "
                             f"{self.transformer.config.latent_shape[0]} (num_frames <= {self.max_num_frames})")
        return self.tokenizer.latent_shape(num_frames)

    def plan(self, num_frames: int, window_overlap: int | None = None) -> list[Window]:
        """The windows that generate `num_frames` frames: one when they fit the transformer, else overlapping
        windows each primed on the last `window_overlap` latent frames of the previous one (`maskgit.windows`)."""
        return plan_windows(self.check_num_frames(num_frames), self.transformer.config.latent_shape[0],
                            window_overlap)

    def settings(self, **overrides: Any) -> PipelineDefaults:
        """`self.defaults` with the non-None `overrides` applied and num_frames resolved (1 + k*f; longer than
        `max_num_frames` means sliding windows)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(PipelineDefaults)})
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        s = replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})
        if s.num_frames is None:
            s = replace(s, num_frames=self.max_num_frames)
        self.check_num_frames(s.num_frames)
        return s

    def check_size(self, height: int | None, width: int | None) -> None:
        """height/width (diffusers' keywords) must be the tokenizer's frame size: the model generates one size."""
        check_frame_size(height, width, self.tokenizer.config.image_size)

    # inputs -------------------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | Sequence[str] | None = None,
                      negative_prompt: str | Sequence[str] | None = None,
                      prompt_embeds: TextEmbedding | Tensor | tuple | None = None,
                      negative_prompt_embeds: TextEmbedding | Tensor | tuple | None = None,
                      prompt_attention_mask: Tensor | None = None,
                      negative_prompt_attention_mask: Tensor | None = None,
                      ) -> tuple[TextEmbedding, TextEmbedding | None]:
        """(conditional, negative or None) embeddings with one row per prompt, on `self.device`.

        prompt_embeds / negative_prompt_embeds: a `TextEmbedding`, an `(embeds, mask)` pair, or a float tensor
        (b, m, text_dim) (diffusers' form) with an optional bool `prompt_attention_mask` (b, m) (default: all
        tokens real)."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds" if prompt is not None
                             else "pass a prompt (str or list of str) or prompt_embeds")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass at most one of negative_prompt and negative_prompt_embeds")
        with self.running("text_encoder") as text_encoder:
            if prompt is not None:
                if prompt_attention_mask is not None:
                    raise ValueError("prompt_attention_mask goes with prompt_embeds, not with prompt")
                cond = text_encoder.encode(as_prompt_list(prompt, "prompt"))
            else:
                cond = embedding_from(prompt_embeds, prompt_attention_mask, "prompt_embeds")
            b = cond.batch_size
            uncond = None
            if negative_prompt is not None:
                uncond = text_encoder.encode(negative_prompt_list(negative_prompt, b))
            elif negative_prompt_embeds is not None:
                uncond = negative_embedding(negative_prompt_embeds, negative_prompt_attention_mask, b)
        for name, emb in (("prompt_embeds", cond), ("negative_prompt_embeds", uncond)):
            if emb is not None and emb.dim != self.transformer.config.text_dim:
                raise ValueError(f"{name} have width {emb.dim}; the transformer expects text_dim "
                                 f"{self.transformer.config.text_dim}")
        device = self.device
        return cond.to(device), None if uncond is None else uncond.to(device)

    def prime_latents(self, grid: Sequence[int], batch_size: int, prime_video: Tensor | None = None,
                      prime_codes: Tensor | None = None) -> Tensor | None:
        """Codes (batch_size, t0', h', w') that fix the first latent frames, from a prime video or given codes.

        grid: (t', h', w') of the whole video. prime_video: (b, 3, 1 + j*f, h, w) or an image (b, 3, h, w), float
        in [-1, 1]; b = 1 or batch_size. prime_codes: (b, t0', h', w') long in [0, codebook_size). At most t'
        latent frames (the whole clip).
        """
        if prime_video is not None and prime_codes is not None:
            raise ValueError("pass at most one of prime_video and prime_codes")
        if prime_video is None and prime_codes is None:
            return None
        t, h, w = grid
        if prime_video is not None:
            if not isinstance(prime_video, Tensor) or prime_video.ndim not in (4, 5):
                raise ValueError(f"prime_video must be a float tensor (b, 3, t, h, w) or an image (b, 3, h, w); got "
                                 f"{tuple(getattr(prime_video, 'shape', ())) or type(prime_video).__name__}")
            with self.running("tokenizer") as tokenizer:
                prime_codes = tokenizer.tokenize(prime_video.to(tokenizer.device, tokenizer.dtype))  # (b, t0', h, w)
            what = f"prime_video ({prime_video.shape[2] if prime_video.ndim == 5 else 1} frames)"
        else:
            what = "prime_codes"
            check_prime_codes(prime_codes, (h, w), self.tokenizer.codebook_size)
        check_prime_span(prime_codes, what, t, self.tokenizer.num_frames_for(t), batch_size)
        return prime_codes.long().to(self.device).expand(batch_size, -1, -1, -1)

    # generation ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | tuple[float, float] | None = None,
        temperature: float | None = None,
        choice_temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        prompt_embeds: TextEmbedding | Tensor | None = None,
        negative_prompt_embeds: TextEmbedding | Tensor | None = None,
        num_videos_per_prompt: int = 1,
        prime_video: Tensor | None = None,
        prime_codes: Tensor | None = None,
        callback: StepCallback | None = None,
        mask_schedule: str | None = None,
        unmask_order: str | None = None,
        refine_steps: int | None = None,
        refine_ratio: float | None = None,
        refine_unit: str | None = None,
        refine_temperature: float | None = None,
        refine_guidance_scale: float | None = None,
        best_of: int | None = None,
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        height: int | None = None,
        width: int | None = None,
        prompt_attention_mask: Tensor | None = None,
        negative_prompt_attention_mask: Tensor | None = None,
        window_overlap: int | None = None,
    ) -> TextToVideoPipelineOutput | tuple:
        """Generates `num_videos_per_prompt` videos per prompt (rows ordered prompt-major), all in one batch.

        Unset settings come from `self.defaults` (num_frames: the longest clip the transformer holds).
        num_frames must be 1 + k*f (f = tokenizer.time_compression); above `max_num_frames` the video is made of
        overlapping windows, each primed on the last `window_overlap` latent frames of the previous one (default:
        half a window; `maskgit.windows`). height / width: checked against the tokenizer's frame size.
        refine_steps / refine_ratio / refine_unit / refine_temperature / refine_guidance_scale: the refinement rounds
        after the last step (`maskgit.sampler`: one model pass each; default from `self.defaults`).
        best_of: decodes per video; the one whose latent frames the model finds most likely given each other is
        returned (`maskgit.sampler`; costs best_of decodes; default from `self.defaults`).
        guidance_scale s >= 0: `uncond + s*(cond - uncond)` on the logits; 1 = no guidance; a (start, end) pair
        ramps linearly over the steps.
        generator: every random draw comes from it (any device); the same seed gives the same codes and video. A
        list of b generators (b = prompts * num_videos_per_prompt) gives row i its own: row i then equals what
        generating that prompt alone with generator i gives. None draws a fresh seed from the OS (`secrets`);
        torch's global RNG is never used or advanced.
        prompt_embeds: a `TextEmbedding`, `(embeds, mask)`, or a tensor (b, m, text_dim) with an optional
        `prompt_attention_mask` (b, m) (same for the negative ones).
        prime_video / prime_codes: the first latent frames are fixed to these codes (image-to-video, continuation);
        the decoded output then starts with the tokenizer's reconstruction of the prime (the decoder is causal).
        callback(step, num_steps, codes): after each decoding step (counted over all windows); codes (b, t', h', w')
        of the current window with [MASK] = codebook_size.
        callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict: diffusers' form of the same hook;
        timestep = num_steps - 1 - step; callback_kwargs holds `callback_on_step_end_tensor_inputs` ("latents":
        the codes as above, "preview": every position filled, "num_masked"); what it returns is not fed back.

        Returns `TextToVideoPipelineOutput(frames)` (`return_dict=False`: the tuple `(frames,)`); for
        b = prompts * num_videos_per_prompt, frames is
            'np': float32 numpy (b, num_frames, h, w, 3) in [0, 1] (diffusers' convention);
            'pt': float32 video (b, 3, num_frames, h, w) in [-1, 1] on the tokenizer's device;
            'pil': b lists of num_frames PIL images;
            'latent': long codes (b, t', h', w') in [0, codebook_size) on the transformer's device.
        """
        check_output_type(output_type)
        tensor_inputs = check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        if isinstance(num_videos_per_prompt, bool) or not isinstance(num_videos_per_prompt, int) \
                or num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt must be a positive int; got {num_videos_per_prompt!r}")
        self.check_size(height, width)
        s = self.settings(num_frames=num_frames, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          temperature=temperature, choice_temperature=choice_temperature, top_k=top_k, top_p=top_p,
                          mask_schedule=mask_schedule, unmask_order=unmask_order, refine_steps=refine_steps,
                          refine_ratio=refine_ratio, refine_unit=refine_unit, refine_temperature=refine_temperature,
                          refine_guidance_scale=refine_guidance_scale, best_of=best_of)
        windows = self.plan(s.num_frames, window_overlap)
        grid = (windows[-1].start + windows[-1].length, *self.tokenizer.latent_shape(1)[1:])  # the whole video
        cond, uncond = self.encode_prompt(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                                          prompt_attention_mask, negative_prompt_attention_mask)
        num_prompts, r = cond.batch_size, num_videos_per_prompt
        b = num_prompts * r
        generators = as_generators(generator, b)
        prime = self.prime_latents(grid, num_prompts, prime_video, prime_codes)  # (p, t0', h', w') or None
        cond = cond.repeat_interleave(r)
        uncond = None if uncond is None else uncond.repeat_interleave(r)
        known = torch.full((b, *grid), -1, dtype=torch.long, device=self.device)  # (b, T', h', w'): -1 = to sample
        if prime is not None:
            known[:, : prime.shape[1]] = prime.repeat_interleave(r, dim=0)
        if len(windows) > 1:
            logger.info("%d frames > the %d one window holds: %d windows of up to %d latent frames, each primed on "
                        "the last %d of the previous one", s.num_frames, self.max_num_frames, len(windows),
                        windows[0].length, windows[1].primed)

        steps = s.num_inference_steps * s.best_of  # the sampler counts steps over a window's candidates
        total_steps = steps * len(windows)
        with self.running("transformer") as transformer, eval_mode(self.tokenizer, transformer), \
                self.progress_bar(total_steps) as bar:
            def make_step(index: int, part: tuple[int, ...]) -> Callable[[Any], None]:
                return make_step_fn(self, callback, callback_on_step_end, tensor_inputs, part, index * steps,
                                    total_steps, bar)

            codes = sample_windows(transformer, known, windows, s, cond, uncond, generators, make_step)
            bar.update(total_steps - bar.n)  # decoding may finish early (fewer unknown tokens)
        if output_type == "latent":
            frames = codes
        else:
            with self.running("tokenizer") as tokenizer, eval_mode(tokenizer):
                video = tokenizer.decode_from_code_indices(codes.to(tokenizer.device))  # (b, 3, t, h, w)
                frames = postprocess_video(video, output_type)
        return TextToVideoPipelineOutput(frames) if return_dict else (frames,)

    # persistence --------------------------------------------------------------------------------------------------
    # save_pretrained / from_pretrained / push_to_hub: `magvit2.hub.PretrainedMixin`; the folder format here.

    def _save_pretrained(self, directory: Path, training: dict[str, Any] | None = None) -> None:
        """Writes `tokenizer/`, `transformer/`, `model_index.json` and then `pipeline.json` (see
        `maskgit.pipeline_folder`)."""
        (directory / PIPELINE_CONFIG).unlink(missing_ok=True)  # the folder counts as incomplete until rewritten
        self.tokenizer._save_pretrained(directory / TOKENIZER_DIR)
        self.transformer._save_pretrained(directory / TRANSFORMER_DIR)
        write_model_index(directory, self.components, self.text_encoder)
        write_pipeline_config(directory, self.text_encoder, self.defaults)

    @classmethod
    def _load_pretrained(cls, directory: Path, *, from_hub: bool, device: torch.device | str | None,
                         text_encoder: TextEncoder | None = None, allow_outside_paths: bool = False,
                         allow_pickle_text_encoder: bool = False) -> TextToVideoPipeline:
        """Loads a pipeline folder (modules in eval mode, on the CPU; the text encoder is built on `device`).

        text_encoder: an instance to use instead of rebuilding the stored spec (it must give the same width).
        allow_outside_paths: follow symlinks and text-encoder folders that lead out of `directory` (refused
        otherwise). allow_pickle_text_encoder: let the text encoder load `pytorch_model.bin` (a pickle) when it has
        no safetensors weights.
        """
        return cls(*load_components(directory, from_hub=from_hub, device=device, text_encoder=text_encoder,
                                    allow_outside_paths=allow_outside_paths,
                                    allow_pickle_text_encoder=allow_pickle_text_encoder))

    @staticmethod
    def stored_dtype(folder: Path) -> torch.dtype:
        return PretrainedMixin.stored_dtype(folder / TRANSFORMER_DIR)

    def card_spec(self) -> CardSpec:
        return pipeline_card_spec(self)
