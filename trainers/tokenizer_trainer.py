"""The tokenizer training loop: G/D alternation on one forward, EMA, validation, atomic checkpoints, exact resume.

One update (step s) = for each of `grad_accum` micro-batches: the tokenizer reconstructs the clip once; the G loss
(reconstruction + LFQ + adversarial from step `disc_start_step`) backpropagates; the D loss reuses that same
reconstruction, detached (no second tokenizer forward). Then both optimizers step once, at LRs that are pure
functions of s. Randomness is derived from (seed, s, micro) and the data order from (seed, epoch), so a resumed run
replays the uninterrupted one exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from magvit2 import TokenizerConfig, VideoTokenizer, preset_config
from magvit2.losses import TokenizerLoss
from magvit2.metrics import codebook_usage, psnr, ssim
from magvit2.pixels import to_uint8
from magvit2.serialization import read_model_config
from trainers.base import Trainer, build_ema
from trainers.configs import TokenizerTrainConfig, to_dict
from trainers.data.batches import build_dataloader
from trainers.data.folders import folder_datasets
from trainers.data.video_io import write_gif, write_video
from trainers.model_sources import TOKENIZER_KIND, tokenizer_dir
from trainers.optim import build_optimizer, clip_gradients, lr_at, sync_gradients
from trainers.rng import make_generator

_G_KEY, _D_KEY = 201, 202  # purpose tags for derive_seed


def _tokenizer_config(config: TokenizerTrainConfig, init_from: str | Path | None
                      ) -> tuple[TokenizerConfig, Path | None]:
    """Architecture: from --init-from's tokenizer (a tokenizer or tokenizer run folder) when given, else the preset
    plus overrides."""
    if init_from is None:
        return preset_config(config.preset, **config.tokenizer), None
    folder = tokenizer_dir(init_from, "--init-from")
    return TokenizerConfig.from_dict(read_model_config(folder, TOKENIZER_KIND)["config"]), folder


class TokenizerTrainer(Trainer):
    """Train a `VideoTokenizer` on folders of videos/images. `fit()` runs until max_steps or max_minutes."""

    name, export_name = "tokenizer", "tokenizer"

    def __init__(self, config: TokenizerTrainConfig, data_dirs: list[str | Path], run_dir: str | Path,
                 val_dir: str | Path | None = None, resume: str | None = None,
                 init_from: str | Path | None = None) -> None:
        super().__init__(config, run_dir, resume, "magvit2.train")
        torch.manual_seed(config.run.seed)  # identical initial weights on every process
        self.tok_config, init_folder = _tokenizer_config(config, init_from)
        self.tokenizer = VideoTokenizer(self.tok_config)
        if init_folder is not None:
            self.tokenizer = VideoTokenizer.from_pretrained(init_folder)
            self.log.info("initialised weights from %s (fresh optimizers, discriminator and schedule)", init_folder)
        self.tokenizer.to(self.device).train()
        self.loss_fn = TokenizerLoss(config.loss, self.tok_config).to(self.device).train()
        self.ema = build_ema(self.tokenizer, config.ema).to(self.device)
        self.opt_g = build_optimizer(self.tokenizer, config.gen_optim)
        self.opt_d = build_optimizer(self.loss_fn.discriminator_parameters(), config.disc_optim)
        self.checkpointed = {"tokenizer": self.tokenizer, "ema": self.ema, "loss": self.loss_fn}
        self.optimizers = {"opt_g": self.opt_g, "opt_d": self.opt_d}
        self.reconstruct = self.tokenizer.reconstruct
        if config.run.compile:
            self.reconstruct = torch.compile(self.tokenizer.reconstruct)
        self._build_data([Path(d) for d in data_dirs], Path(val_dir) if val_dir else None)
        self.d_step = 0
        self.start()

    # setup -------------------------------------------------------------------------------------------------------

    def _build_data(self, data_dirs: list[Path], val_dir: Path | None) -> None:
        c, d = self.config, self.config.data
        f = self.tokenizer.time_compression
        for name, frames in (("data.num_frames", d.num_frames), ("data.val_num_frames", d.val_num_frames)):
            if frames is not None and (frames - 1) % f:
                raise ValueError(f"{name}={frames} must be 1 + {f}k for this tokenizer (e.g. {1 + f * 2})")
        common = dict(image_size=self.tok_config.image_size, seed=c.run.seed, include_images=d.include_images,
                      max_bad_fraction=d.max_bad_fraction, frame_stride=d.frame_stride)
        split = None if val_dir is not None or d.val_fraction == 0 else "train"
        self.train_set = folder_datasets(data_dirs, split, num_frames=d.num_frames, hflip=d.hflip,
                                         val_fraction=d.val_fraction, **common)
        val_frames = d.val_num_frames or d.num_frames
        if val_dir is not None:
            self.val_set = folder_datasets([val_dir], None, num_frames=val_frames, random_crop=False, **common)
        elif d.val_fraction > 0:
            self.val_set = folder_datasets(data_dirs, "val", num_frames=val_frames, val_fraction=d.val_fraction,
                                           **common)
        else:
            self.val_set = None
        acc = self.accelerator
        self.loader = build_dataloader(self.train_set, d.batch_size, c.run.seed, num_workers=d.num_workers,
                                       num_replicas=acc.num_processes, rank=acc.process_index)
        stats = self.train_set.stats
        self.log.info("training clips: %d usable of %d files (%d skipped); validation clips: %s", len(self.train_set),
                      stats.num_files, stats.num_skipped, len(self.val_set) if self.val_set is not None else 0)

    def resolved_config(self) -> dict[str, Any]:
        return {**to_dict(self.config), "tokenizer_resolved": self.tok_config.to_dict()}

    # checkpoint hooks --------------------------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"d_step": self.d_step}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.d_step = int(state["d_step"])

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        saved, ours = state["config"]["tokenizer_resolved"], self.tok_config.to_dict()
        if saved != ours:
            diff = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
            raise ValueError(f"{path}: the checkpoint's tokenizer differs from this run's in {diff}")

    def write_export(self, folder: Path) -> None:
        """The EMA tokenizer (RUN_DIR/tokenizer/)."""
        self.ema.ema_model.save_pretrained(folder)

    # one update ----------------------------------------------------------------------------------------------------

    def train_step(self, batches) -> dict[str, float] | None:
        """Update number `self.step` (0-based) of G, and of D once adversarial training has started; afterwards
        `self.step` counts completed updates. Returns log values every run.log_every updates (and on skipped ones)."""
        c, acc, step = self.config, self.accelerator, self.step
        use_adv = step >= c.disc_start_step
        g_parts = d_parts = None
        for micro in range(c.grad_accum):
            batch = self.next_batch(batches)
            video = batch["video"].to(self.device, non_blocking=True)
            with acc.autocast():
                out = self.reconstruct(video, step=step)
                g_loss, g_parts = self.loss_fn.generator_loss(
                    video, out, last_layer=self.tokenizer.last_layer_weight, step=step, use_adversarial=use_adv,
                    generator=make_generator(c.run.seed, _G_KEY, step, micro))
            acc.backward(g_loss / c.grad_accum)
            if use_adv:
                with acc.autocast():
                    d_loss, d_parts = self.loss_fn.discriminator_loss(
                        video, out.recon.detach(), apply_r1=self.loss_fn.should_apply_r1(self.d_step),
                        generator=make_generator(c.run.seed, _D_KEY, step, micro))
                acc.backward(d_loss / c.grad_accum)
            self._position = (batch["epoch"], batch["batch_index"] + 1)
        g_params = list(self.tokenizer.parameters())
        d_params = self.loss_fn.discriminator_parameters()
        sync_gradients(g_params, acc.num_processes)
        sync_gradients(d_params, acc.num_processes)
        if acc.scaler is not None:
            acc.scaler.unscale_(self.opt_g)
            if use_adv:
                acc.scaler.unscale_(self.opt_d)
        g_norm = clip_gradients(g_params, c.gen_optim.max_grad_norm)
        d_norm = clip_gradients(d_params, c.disc_optim.max_grad_norm) if use_adv else torch.zeros(())
        losses = {"generator." + k: v for k, v in g_parts.as_dict().items()}
        if use_adv:
            losses.update({"discriminator." + k: v for k, v in d_parts.as_dict().items()})
        norms = {"generator": g_norm} if acc.scaler is not None else {"generator": g_norm, "discriminator": d_norm}
        ok = self.guard.check(step, "generator+discriminator", losses, grad_norm=max(float(v) for v in norms.values())
                              if all(torch.isfinite(v) for v in norms.values()) else float("nan"),
                              last_checkpoint=self.last_checkpoint)
        lr_g, lr_d = lr_at(c.gen_optim, step, c.run.max_steps), lr_at(c.disc_optim, self.d_step, c.run.max_steps)
        if ok:
            self.optimizer_step(self.opt_g, lr_g)
            self.ema.update()
            if use_adv:
                self.optimizer_step(self.opt_d, lr_d)
                self.d_step += 1
            if acc.scaler is not None:
                acc.scaler.update()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        self.step += 1
        if not self.logs_due(ok):
            return None
        return {**losses, "lr_g": lr_g, "lr_d": lr_d if use_adv else 0.0, "grad_norm_g": float(g_norm),
                "grad_norm_d": float(d_norm), "skipped_update": float(not ok), "epoch": float(self._position[0])}

    # validation -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, write_samples: bool = True) -> dict[str, float]:
        """EMA tokenizer on up to data.val_clips held-out clips: PSNR, SSIM, codebook usage/perplexity, samples."""
        if self.val_set is None:
            return {}
        model = self.ema.ema_model.eval()
        n = min(self.config.data.val_clips, len(self.val_set))
        psnrs, ssims, codes, samples = [], [], [], []
        for i in range(n):
            item = self.val_set[(0, i, -1)]
            if not isinstance(item, dict):
                continue
            video = item["video"].unsqueeze(0).to(self.device)
            with self.accelerator.autocast():
                out = model.reconstruct(video)
            recon = out.recon.float().clamp(-1, 1)
            psnrs.append(psnr(recon, video)), ssims.append(ssim(recon, video)), codes.append(out.codes.flatten())
            if len(samples) < 4:
                samples.append(torch.cat([video, recon], dim=-1)[0])  # (3, t, h, 2w): original | reconstruction
        if not psnrs:
            return {}
        usage, perplexity = codebook_usage(torch.cat(codes), model.codebook_size)
        result = {"psnr_db": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()),
                  "codebook_usage": float(usage), "perplexity": float(perplexity), "clips": float(len(psnrs))}
        if write_samples and self.is_main:
            folder = self.run_dir / "samples" / f"step-{self.step:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for j, clip in enumerate(samples):
                frames = to_uint8(clip)
                write_video(folder / f"val{j}.mp4", frames, fps=8)
                write_gif(folder / f"val{j}.gif", frames, fps=8)
        return result

    # what fit() reports ---------------------------------------------------------------------------------------------

    def postfix(self, logs: dict[str, float]) -> dict[str, str]:
        return {"recon": f"{logs['generator.recon']:.4f}", "usage": f"{logs['generator.usage']:.2f}"}

    def summary(self, last_val: dict[str, float]) -> dict[str, Any]:
        return {**last_val, "skipped_files": self.train_set.stats.num_skipped,
                "load_failures": self.train_set.stats.num_runtime_failures}  # decode failures while training
