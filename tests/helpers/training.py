"""In-process trainers on the `tiny` presets and the stage-two data they train on."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

from magvit2 import VideoTokenizer, preset_config
from magvit2.serialization import config_from_dict
from maskgit import MaskGitConfig, MaskGitTransformer, PipelineDefaults, TextToVideoPipeline, maskgit_preset
from maskgit.text import build_text_encoder
from scripts import train_maskgit, train_tokenizer
from tests.helpers.media import pan_frames
from trainers.commands.tokenize_folder import tokenize_folder
from trainers.configs import MaskGitTrainConfig, TokenizerTrainConfig, merge, to_dict
from trainers.data.video_io import write_video
from trainers.maskgit_trainer import MaskGitTrainer

# captioned photo pans of stage two (make_stage_two); one empty caption trains as unconditional, with a warning
STAGE_TWO_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
STAGE_TWO_CAPTIONS = ("an astronaut in a white suit", "a cup of coffee", "a cat looking up",
                      "a rocket on the launch pad", "a man with a camera", "")
# the LoRA flags of the MaskGit trainer's adapter runs
LORA = ("--lora-rank", "4", "--lora-targets", "attention+ff")


def reset_accelerate_state() -> None:
    """accelerate keeps one process-wide state (mixed precision, the launcher's settings): forget it."""
    AcceleratorState._reset_state(reset_partial_state=True)


def weights_after_update(monkeypatch, trainer, module: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
    """A dict that `trainer.fit()` fills with `module`'s weights once `step` updates are done (monkeypatched
    train_step)."""
    snapshot: dict[str, torch.Tensor] = {}
    train_step = trainer.train_step

    def remember(batches):
        logs = train_step(batches)
        if trainer.step == step:
            snapshot.update({k: v.clone() for k, v in module.state_dict().items()})
        return logs

    monkeypatch.setattr(trainer, "train_step", remember)
    return snapshot


def tokenizer_config(*flags: str) -> TokenizerTrainConfig:
    """The tokenizer trainer's `tiny` preset config (+ CLI flags), as magvit2-train-tokenizer builds it."""
    args = train_tokenizer.build_parser().parse_args(["--data", "x", "--out", "y", "--preset", "tiny", *flags])
    return train_tokenizer.make_config(args)


def make_stage_two(root: Path, photos=STAGE_TWO_PHOTOS, captions=STAGE_TWO_CAPTIONS,
                   codebook_size: int | None = 2**6, **quantizer) -> dict[str, Path]:
    """A tiny saved tokenizer, captioned lossless clips of real photo pans (5 frames) and their code shards."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tok_config = preset_config("tiny", codebook_size=codebook_size, **quantizer)
        VideoTokenizer(tok_config).save_pretrained(root / "tokenizer")
    clips = root / "clips"
    clips.mkdir(parents=True)
    lines = []
    for photo, caption in zip(photos, captions):
        write_video(clips / f"{photo}.mp4", pan_frames(5, (16, 16), photo), lossless=True)
        lines.append(json.dumps({"file_name": f"{photo}.mp4", "text": caption}) + "\n")
    (clips / "metadata.jsonl").write_text("".join(lines))
    tokenize_folder(root / "tokenizer", clips, root / "codes", num_frames=5, device="cpu")
    return {"tokenizer": root / "tokenizer", "clips": clips, "codes": root / "codes"}


def maskgit_config(*flags: str, **overrides) -> MaskGitTrainConfig:
    """The MaskGit trainer's `tiny` preset (+ CLI flags), then nested `overrides` (e.g. maskgit={"dim": 48})."""
    args = train_maskgit.build_parser().parse_args(["--tokenizer", "x", "--codes", "x", "--out", "y", "--preset",
                                                    "tiny", *flags])
    base = train_maskgit.make_config(args)
    return config_from_dict(MaskGitTrainConfig, merge(to_dict(base), overrides))


def maskgit_trainer(data: dict[str, Path], run_dir: Path, *flags: str, cfg: MaskGitTrainConfig | None = None,
                    **kwargs) -> MaskGitTrainer:
    """A MaskGitTrainer on `make_stage_two`'s data (its code shards unless `data_dirs` is given), configured by
    `cfg` or `maskgit_config(*flags)`."""
    kwargs.setdefault("codes_dir", None if "data_dirs" in kwargs else data["codes"])
    return MaskGitTrainer(cfg or maskgit_config(*flags), data["tokenizer"], run_dir, **kwargs)


def make_lora_base(data: dict, folder: Path, seed: int = 7) -> Path:
    """A pipeline on the stage-two tokenizer (tiny preset transformer, 'tiny:32' text) saved at `folder`."""
    tokenizer = VideoTokenizer.from_pretrained(data["tokenizer"])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer = MaskGitTransformer(MaskGitConfig(codebook_size=tokenizer.codebook_size,
                                                       latent_shape=tokenizer.latent_shape(5), text_dim=32,
                                                       **maskgit_preset("tiny")))
    pipe = TextToVideoPipeline(tokenizer, build_text_encoder("tiny:32"), transformer,
                               PipelineDefaults(num_inference_steps=4, num_frames=5))
    pipe.save_pretrained(folder)
    return folder
