"""Text-to-video: prompts -> text embeddings -> MaskGIT decoding over tokenizer codes -> pixels.

`TextToVideoPipeline` composes the three parts (diffusers-style components):

* `tokenizer`    a `magvit2.VideoTokenizer` (frozen): codes <-> pixels; also tokenizes prime videos;
* `text_encoder` a `maskgit.text.TextEncoder` (frozen): prompts -> `TextEmbedding`;
* `transformer`  a `maskgit.MaskGitTransformer`: masked codes + text -> logits; decoded by `maskgit.sampler.sample`.

Sampling defaults live in `maskgit.pipeline_settings.PipelineDefaults`; the folder format written by
`save_pretrained` (`pipeline.json` + `tokenizer/` + `transformer/`) in `maskgit.pipeline_folder`.

Classifier-free guidance follows diffusers / aMUSEd: `logits = uncond + s * (cond - uncond)` per step, with both
halves computed in one batched pass. s = 1: no guidance (conditional only, the unconditional half is skipped);
s = 0: unconditional; s > 1: stronger prompt adherence. The unconditional half sees the transformer's learned null
text embedding, or the negative prompt when one is given.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from magvit2.hub import resolve_pretrained
from magvit2.tokenizer import VideoTokenizer
from magvit2.torch_utils import eval_mode

from .pipeline_folder import (
    PIPELINE_CONFIG,
    TOKENIZER_DIR,
    TRANSFORMER_DIR,
    component_dir,
    push_pipeline,
    read_pipeline_config,
    text_encoder_source,
    write_pipeline_config,
)
from .pipeline_output import (
    TextToVideoPipelineOutput,
    check_callback,
    check_callback_result,
    check_output_type,
    postprocess_video,
    step_end_kwargs,
)
from .pipeline_settings import PipelineDefaults
from .sampler import SamplerStep, make_guided_logits_fn, sample
from .text import TextEmbedding, TextEncoder, as_text_embedding, build_text_encoder
from .transformer import MaskGitTransformer

StepCallback = Callable[[int, int, Tensor], None]  # (step, num_steps, codes (b, t', h', w') with [MASK] = mask id)


def _fresh_generator() -> torch.Generator:
    """A CPU generator seeded from the OS entropy pool (never from, and never advancing, torch's global RNG)."""
    return torch.Generator().manual_seed(secrets.randbits(63))


# ---------------------------------------------------------------------------------------------------------------
# the pipeline


class TextToVideoPipeline:
    """Prompts -> videos with a MagViT2 tokenizer, a text encoder and a MaskGit transformer.

    Compatibility is checked here, once: the transformer's vocabulary must equal the tokenizer's codebook, the
    tokenizer's latent frame (h', w') must fit the transformer's grid, and the text width must match `text_dim`.
    """

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
            self.latent_grid(defaults.num_frames)

    # shapes and devices -------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the transformer lives (codes are sampled there)."""
        return next(self.transformer.parameters()).device

    def to(self, device: torch.device | str) -> TextToVideoPipeline:
        """Moves all three parts to `device`; returns self."""
        for module in (self.tokenizer, self.text_encoder, self.transformer):
            module.to(device)
        return self

    @property
    def max_num_frames(self) -> int:
        """The longest clip the transformer's latent grid holds: 1 + (t' - 1) * f."""
        return self.tokenizer.num_frames_for(self.transformer.config.latent_shape[0])

    def latent_grid(self, num_frames: int) -> tuple[int, int, int]:
        """(t', h', w') of a `num_frames` clip; ValueError unless num_frames = 1 + k*f and t' fits the transformer."""
        f = self.tokenizer.time_compression
        if isinstance(num_frames, bool) or not isinstance(num_frames, int):
            raise ValueError(f"num_frames must be an int 1 + {f}k; got {num_frames!r}")
        if num_frames < 1 or (num_frames - 1) % f:
            k = max((num_frames - 1) // f, 0)
            hint = f"try {1 + f * k} or {1 + f * (k + 1)}" if num_frames > 1 else f"try 1 or {1 + f}"
            raise ValueError(f"num_frames={num_frames} is not 1 + {f}k; {hint}")
        grid = self.tokenizer.latent_shape(num_frames)
        if grid[0] > self.transformer.config.latent_shape[0]:
            raise ValueError(f"num_frames={num_frames} needs {grid[0]} latent frames but the transformer holds at most "
                             f"{self.transformer.config.latent_shape[0]} (num_frames <= {self.max_num_frames})")
        return grid

    def settings(self, **overrides: Any) -> PipelineDefaults:
        """`self.defaults` with the non-None `overrides` applied and num_frames resolved (validated)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(PipelineDefaults)})
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        s = replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})
        if s.num_frames is None:
            s = replace(s, num_frames=self.max_num_frames)
        self.latent_grid(s.num_frames)
        return s

    # inputs -------------------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | Sequence[str] | None = None,
                      negative_prompt: str | Sequence[str] | None = None,
                      prompt_embeds: TextEmbedding | tuple | None = None,
                      negative_prompt_embeds: TextEmbedding | tuple | None = None
                      ) -> tuple[TextEmbedding, TextEmbedding | None]:
        """(conditional, negative or None) embeddings with one row per prompt, on the transformer's device."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds" if prompt is not None
                             else "pass a prompt (str or list of str) or prompt_embeds")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass at most one of negative_prompt and negative_prompt_embeds")
        if prompt is not None:
            prompts = _as_prompt_list(prompt, "prompt")
            cond = self.text_encoder.encode(prompts)
        else:
            cond = as_text_embedding(prompt_embeds)
        b = cond.batch_size
        uncond = None
        if negative_prompt is not None:
            negatives = _as_prompt_list(negative_prompt, "negative_prompt")
            if len(negatives) == 1:
                negatives = negatives * b
            if len(negatives) != b:
                raise ValueError(f"got {len(negatives)} negative prompts for {b} prompts; pass one or {b}")
            uncond = self.text_encoder.encode(negatives)
        elif negative_prompt_embeds is not None:
            uncond = as_text_embedding(negative_prompt_embeds)
            if uncond.batch_size not in (1, b):
                raise ValueError(f"negative_prompt_embeds has {uncond.batch_size} rows for {b} prompts; pass 1 or {b}")
            uncond = uncond.expand(b)
        for name, emb in (("prompt_embeds", cond), ("negative_prompt_embeds", uncond)):
            if emb is not None and emb.dim != self.transformer.config.text_dim:
                raise ValueError(f"{name} have width {emb.dim}; the transformer expects text_dim "
                                 f"{self.transformer.config.text_dim}")
        device = self.device
        return cond.to(device), None if uncond is None else uncond.to(device)

    def prime_latents(self, grid: Sequence[int], batch_size: int, prime_video: Tensor | None = None,
                      prime_codes: Tensor | None = None) -> Tensor | None:
        """Codes (batch_size, t0', h', w') that fix the first latent frames, from a prime video or given codes.

        prime_video: (b, 3, 1 + j*f, h, w) or an image (b, 3, h, w), float in [-1, 1]; b = 1 or batch_size.
        prime_codes: (b, t0', h', w') long in [0, codebook_size). At most t' latent frames (the whole clip).
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
            param = next(self.tokenizer.parameters())
            prime_codes = self.tokenizer.tokenize(prime_video.to(param.device, param.dtype))  # (b, t0', h', w')
            what = f"prime_video ({prime_video.shape[2] if prime_video.ndim == 5 else 1} frames)"
        else:
            what = "prime_codes"
            if (not isinstance(prime_codes, Tensor) or prime_codes.is_floating_point()
                    or prime_codes.dtype == torch.bool or prime_codes.ndim != 4):
                raise ValueError(f"prime_codes must be an integer tensor (b, t0', {h}, {w}); got "
                                 f"{getattr(prime_codes, 'dtype', type(prime_codes).__name__)} "
                                 f"{tuple(getattr(prime_codes, 'shape', ()))}")
            if tuple(prime_codes.shape[2:]) != (h, w):
                raise ValueError(f"prime_codes must have {h}x{w} codes per latent frame; got shape "
                                 f"{tuple(prime_codes.shape)}")
            k = self.tokenizer.codebook_size
            if prime_codes.numel() and (int(prime_codes.min()) < 0 or int(prime_codes.max()) >= k):
                raise ValueError(f"prime_codes must lie in [0, {k}); got values in [{int(prime_codes.min())}, "
                                 f"{int(prime_codes.max())}]")
        t0 = prime_codes.shape[1]
        if not 1 <= t0 <= t:
            raise ValueError(f"{what} gives {t0} latent frames but the clip has {t} "
                             f"(num_frames={self.tokenizer.num_frames_for(t)}); prime with fewer frames")
        if prime_codes.shape[0] not in (1, batch_size):
            raise ValueError(f"{what} has batch {prime_codes.shape[0]} for {batch_size} prompts; pass 1 or "
                             f"{batch_size}")
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
        generator: torch.Generator | None = None,
        output_type: str = "np",
        prompt_embeds: TextEmbedding | None = None,
        negative_prompt_embeds: TextEmbedding | None = None,
        num_videos_per_prompt: int = 1,
        prime_video: Tensor | None = None,
        prime_codes: Tensor | None = None,
        callback: StepCallback | None = None,
        mask_schedule: str | None = None,
        unmask_order: str | None = None,
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> TextToVideoPipelineOutput | tuple:
        """Generates `num_videos_per_prompt` videos per prompt (rows ordered prompt-major).

        Unset settings come from `self.defaults` (num_frames: the longest clip the transformer holds).
        num_frames must be 1 + k*f (f = tokenizer.time_compression). guidance_scale s: `uncond + s*(cond - uncond)`
        on the logits; 1 = no guidance; a (start, end) pair ramps linearly over the steps.
        generator: every random draw comes from it (any device); the same seed gives the same codes and video.
        None draws a fresh seed from the OS (`secrets`); torch's global RNG is never used or advanced.
        prime_video / prime_codes: the first latent frames are fixed to these codes (image-to-video, continuation);
        the decoded output then starts with the tokenizer's reconstruction of the prime (the decoder is causal).
        callback(step, num_steps, codes): after each decoding step; codes (b, t', h', w') with [MASK] = codebook_size.
        callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict: diffusers' form of the same hook;
        timestep = num_steps - 1 - step; callback_kwargs holds `callback_on_step_end_tensor_inputs` ("latents":
        the codes as above, "preview": every position filled, "num_masked"); what it returns is not fed back.

        Returns `TextToVideoPipelineOutput(frames)` (`return_dict=False`: the tuple `(frames,)`); for
        b = prompts * num_videos_per_prompt, frames is
            'np': float32 numpy (b, num_frames, h, w, 3) in [0, 1] (diffusers' convention);
            'pt': float video (b, 3, num_frames, h, w) in [-1, 1] on the tokenizer's device;
            'pil': b lists of num_frames PIL images;
            'latent': long codes (b, t', h', w') in [0, codebook_size) on the transformer's device.
        """
        check_output_type(output_type)
        tensor_inputs = check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        if isinstance(num_videos_per_prompt, bool) or not isinstance(num_videos_per_prompt, int) \
                or num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt must be a positive int; got {num_videos_per_prompt!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
        s = self.settings(num_frames=num_frames, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, temperature=temperature,
                          choice_temperature=choice_temperature, top_k=top_k, top_p=top_p, mask_schedule=mask_schedule,
                          unmask_order=unmask_order)
        grid = self.latent_grid(s.num_frames)
        cond, uncond = self.encode_prompt(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds)
        num_prompts = cond.batch_size
        prime = self.prime_latents(grid, num_prompts, prime_video, prime_codes)  # (p, t0', h', w') or None

        r = num_videos_per_prompt
        b, n = num_prompts * r, math.prod(grid)
        cond = cond.repeat_interleave(r)
        uncond = None if uncond is None else uncond.repeat_interleave(r)
        known = None
        if prime is not None:
            known = torch.full((b, *grid), -1, dtype=torch.long, device=self.device)  # (b, t', h', w')
            known[:, : prime.shape[1]] = prime.repeat_interleave(r, dim=0)
            known = known.flatten(1)  # (b, n)

        step_fn = None
        if callback is not None or callback_on_step_end is not None:
            def step_fn(state: SamplerStep) -> None:
                if callback is not None:
                    callback(state.step, state.num_steps, state.codes.view(b, *grid))
                if callback_on_step_end is not None:
                    kwargs = step_end_kwargs(tensor_inputs, state.codes, state.preview, state.num_masked, grid)
                    check_callback_result(callback_on_step_end(self, state.step, state.num_steps - 1 - state.step,
                                                               kwargs))

        with eval_mode(self.tokenizer, self.transformer):
            logits_fn = make_guided_logits_fn(self.transformer, cond, uncond, batch_size=b, grid=grid)
            codes = sample(
                logits_fn, b, n, generator=generator if generator is not None else _fresh_generator(),
                vocab_sizes=self.transformer.vocab_sizes, mask_id=self.transformer.mask_id,
                num_steps=s.num_inference_steps, temperature=s.temperature, choice_temperature=s.choice_temperature,
                schedule=s.mask_schedule, top_k=s.top_k, top_p=s.top_p, guidance_scale=s.guidance_scale,
                known_codes=known, device=self.device, callback=step_fn, order=s.unmask_order,
            ).view(b, *grid)  # (b, t', h', w')
            if output_type == "latent":
                frames = codes
            else:
                tokenizer_device = next(self.tokenizer.parameters()).device
                video = self.tokenizer.decode_from_code_indices(codes.to(tokenizer_device))  # (b, 3, t, h, w)
                frames = postprocess_video(video, output_type)
        return TextToVideoPipelineOutput(frames) if return_dict else (frames,)

    # persistence --------------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes `tokenizer/`, `transformer/` and then `pipeline.json` (see `maskgit.pipeline_folder`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PIPELINE_CONFIG).unlink(missing_ok=True)  # the folder counts as incomplete until rewritten
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        self.transformer.save_pretrained(directory / TRANSFORMER_DIR)
        write_pipeline_config(directory, self.text_encoder, self.defaults)
        return directory

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, revision: str | None = None, create_pr: bool = False,
                    training: dict[str, Any] | None = None) -> Any:
        """Upload `save_pretrained`'s folder plus a model card (the three parts' configs, the sampling defaults;
        `training`, e.g. the run's summary.json) to the Hub repo `repo_id` ('owner/name'; created if needed)."""
        return push_pipeline(self, repo_id, training, commit_message=commit_message, private=private, token=token,
                             revision=revision, create_pr=create_pr)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: torch.device | str | None = None,
                        text_encoder: TextEncoder | None = None, allow_outside_paths: bool = False,
                        allow_pickle_text_encoder: bool = False, **hub_kwargs: Any) -> TextToVideoPipeline:
        """Loads a folder written by `save_pretrained` (modules in eval mode, on `device` or the CPU).

        text_encoder: an instance to use instead of rebuilding the stored spec (it must give the same width).
        allow_outside_paths: follow symlinks and text-encoder folders that lead out of `directory` (refused
        otherwise). allow_pickle_text_encoder: let the text encoder load `pytorch_model.bin` (a pickle) when it has
        no safetensors weights. `directory` may be a Hugging Face Hub repo id holding a pipeline folder
        (`magvit2.hub`: cache first; `revision=`, `cache_dir=`, `token=`, `local_files_only=`).
        """
        directory, from_hub = resolve_pretrained(directory, **hub_kwargs)
        payload = read_pipeline_config(directory)
        # a Hub cache snapshot's files are links into the repo's blobs/ (checked by resolve_pretrained)
        tokenizer_dir, transformer_dir = (component_dir(directory, sub, allow_outside_paths or from_hub)
                                          for sub in (TOKENIZER_DIR, TRANSFORMER_DIR))
        defaults = PipelineDefaults.from_dict(payload["defaults"])
        tokenizer = VideoTokenizer.from_pretrained(tokenizer_dir).eval()
        transformer = MaskGitTransformer.from_pretrained(transformer_dir)
        if text_encoder is None:
            text = payload["text_encoder"]
            spec = text_encoder_source(directory, text["spec"], allow_outside_paths)
            text_encoder = build_text_encoder(spec, max_length=text["max_length"], device=device,
                                              allow_pickle=allow_pickle_text_encoder)
            if text_encoder.dim != text["dim"]:
                raise ValueError(f"text encoder {text['spec']!r} gives {text_encoder.dim}-d embeddings; the pipeline "
                                 f"was saved with {text['dim']}-d ones")
        pipe = cls(tokenizer, text_encoder, transformer, defaults)
        return pipe if device is None else pipe.to(device)


def _as_prompt_list(prompt: str | Sequence[str], name: str) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if prompts is None or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a str or a list of str; got {prompt!r:.80}")
    if not prompts:
        raise ValueError(f"{name} is an empty list; pass at least one prompt")
    return prompts
