"""What the MaskGit trainer measures and shows at each validation: masked-token loss and accuracy at FIXED masks on
held-out codes, and sample videos of fixed prompts from the EMA pipeline."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from magvit2.pixels import to_uint8
from magvit2.serialization import atomic_write_text
from magvit2.torch_utils import eval_mode
from magvit2.video_write import write_gif, write_video
from maskgit.objective import random_token_mask
from maskgit.pipeline import TextToVideoPipeline
from maskgit.text import TextEmbedding
from maskgit.transformer import MaskGitTransformer, split_codes
from trainers.data.captions import CaptionBank, slugify
from trainers.data.codes import CodeClips
from trainers.rng import make_generator

_VAL_KEY = 303  # purpose tag for derive_seed (the trainer uses 301, 302)
Autocast = Callable[[], contextlib.AbstractContextManager]


@torch.no_grad()
def validation_losses(model: MaskGitTransformer, clips: CodeClips, captions: CaptionBank, ratios: Sequence[float],
                      batch_size: int, seed: int, device: torch.device, autocast: Autocast = contextlib.nullcontext,
                      shard: tuple[int, int] = (0, 1), reduce: Callable[[list[float]], list[float]] = list
                      ) -> dict[str, float]:
    """`model` on the held-out `clips` with fixed masks (a generator per (ratio, chunk) derived from `seed`) at each
    mask ratio: masked-token CE and accuracy per ratio ("loss@0.5", "accuracy@0.5") and their means.

    shard=(rank, world): this process takes chunks rank, rank + world, ...; `reduce` sums the totals over processes
    (the masks depend only on the chunk, so any process count gives the same numbers)."""
    grid, n = clips.latent_shape, clips.codes[0].numel()
    result: dict[str, float] = {}
    with eval_mode(model):
        for i, ratio in enumerate(ratios):
            k = min(n, max(1, round(n * ratio)))
            loss_sum = correct_sum = count = 0.0
            for j, start in enumerate(range(0, len(clips), batch_size)):
                if j % shard[1] != shard[0]:
                    continue
                codes = clips.codes[start : start + batch_size].to(device).flatten(1)  # (b, n)
                b = codes.shape[0]
                mask = random_token_mask(torch.full((b,), k), n, make_generator(seed, _VAL_KEY, i, j),
                                         device)  # (b, n) bool
                text = TextEmbedding(*captions.embed(clips.captions[start : start + b])).to(device)
                with autocast():
                    logits = model(torch.where(mask, model.mask_id, codes), text, grid=grid)
                correct = torch.ones(int(mask.sum()), dtype=torch.bool, device=device)
                for lg, tg in zip(logits, split_codes(codes, model.vocab_sizes)):
                    lg_m = lg[mask].float()  # (masked, V_k)
                    loss_sum += float(F.cross_entropy(lg_m, tg[mask], reduction="sum"))
                    correct &= lg_m.argmax(-1) == tg[mask]
                correct_sum += float(correct.sum())
                count += float(mask.sum())
            loss_sum, correct_sum, count = reduce([loss_sum, correct_sum, count])
            result[f"loss@{ratio:g}"], result[f"accuracy@{ratio:g}"] = loss_sum / count, correct_sum / count
    names = [f"{r:g}" for r in ratios]
    result["loss"] = sum(result[f"loss@{r}"] for r in names) / len(names)
    result["accuracy"] = sum(result[f"accuracy@{r}"] for r in names) / len(names)
    return result


@torch.no_grad()
def write_samples(pipeline: TextToVideoPipeline, prompts: Sequence[str], folder: Path, seed: int, step: int,
                  autocast: Autocast = contextlib.nullcontext) -> Path:
    """Videos of `prompts`, all in one batch, prompt i from `torch.Generator().manual_seed(seed + i)` (as
    `magvit2-generate --seed SEED` seeds video i) -> folder/NNN-slug.{mp4,gif} + samples.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    settings, lines = pipeline.settings(), []
    pipeline.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    with autocast():
        videos = pipeline(list(prompts), generator=generators, output_type="pt").frames  # (b, 3, t, h, w)
    for i, (prompt, video) in enumerate(zip(prompts, videos)):
        frames = to_uint8(video)  # (t, h, w, 3) uint8
        stem = f"{i:03d}-{slugify(prompt, 40)}"
        write_video(folder / f"{stem}.mp4", frames, fps=settings.fps)
        write_gif(folder / f"{stem}.gif", frames, fps=settings.fps)
        lines.append({"prompt": prompt, "file": f"{stem}.mp4", "gif": f"{stem}.gif", "seed": seed + i,
                      "step": step, "settings": settings.to_dict()})
    atomic_write_text(folder / "samples.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    return folder
