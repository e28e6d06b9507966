"""The tokenizer training loop: G/D alternation on one forward, EMA, validation, atomic checkpoints, exact resume.

One update (step s) = for each of `grad_accum` micro-batches: the tokenizer reconstructs the clip once; the G loss
(reconstruction + LFQ + adversarial from step `disc_start_step`) backpropagates; the D loss reuses that same
reconstruction, detached (no second tokenizer forward). Then both optimizers step once, at LRs that are pure
functions of s. Randomness is derived from (seed, s, micro) and the data order from (seed, epoch), so a resumed run
replays the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magvit2 import VideoTokenizer, preset_config
from magvit2.layers import inflate_image_weights_
from magvit2.losses import TokenizerLoss
from magvit2.metrics import psnr, ssim, usage_from_counts
from magvit2.pixels import to_uint8
from trainers.argnames import KEYWORDS, ArgNames
from trainers.base import Trainer
from trainers.code_noise import reconstruct_with_code_noise
from trainers.configs import TokenizerTrainConfig, to_dict
from trainers.data.batches import build_dataloader
from trainers.data.folders import folder_datasets, size_note
from trainers.data.video_write import write_gif, write_video
from trainers.export_card import export_card
from trainers.model_sources import load_init_tokenizer
from trainers.optim import OptimizerGroup, build_optimizer, lr_at
from trainers.rng import make_generator
from trainers.run_setup import build_ema, compile_module, prepare_ddp

_G_KEY, _D_KEY, _NOISE_KEY = 201, 202, 203  # purpose tags for derive_seed


class ReconstructStep(nn.Module):
    """`tokenizer.reconstruct(video, step=step)` as a module forward, the G step's entry point that a distributed
    engine (DDP) wraps; with `code_noise` > 0 that share of the codes is redrawn before decoding
    (`trainers.code_noise`, from `generator`). It holds no weights of its own."""

    def __init__(self, tokenizer: VideoTokenizer, code_noise: float = 0.0, code_noise_clips: float = 1.0) -> None:
        super().__init__()
        self.tokenizer, self.code_noise, self.code_noise_clips = tokenizer, code_noise, code_noise_clips

    def forward(self, video: torch.Tensor, step: int, generator: torch.Generator | None = None,
                rows: tuple[int, int] | None = None):
        if self.code_noise == 0.0:
            return self.tokenizer.reconstruct(video, step=step)
        return reconstruct_with_code_noise(self.tokenizer, video, self.code_noise, generator, step=step, rows=rows,
                                           clips=self.code_noise_clips)


class TokenizerTrainer(Trainer):
    """Train a `VideoTokenizer` on folders of videos/images. `fit()` runs until max_steps or max_minutes."""

    name, export_name = "tokenizer", "tokenizer"
    ddp_attributes = ("g_forward", "d_forward")

    def __init__(self, config: TokenizerTrainConfig, data_dirs: list[str | Path], run_dir: str | Path,
                 val_dir: str | Path | None = None, resume: str | None = None,
                 init_from: str | Path | None = None, init_from_image: str | Path | None = None,
                 names: ArgNames = KEYWORDS) -> None:
        super().__init__(config, run_dir, resume, "magvit2.train", names)
        torch.manual_seed(config.run.seed)  # identical initial weights on every process
        if init_from is not None and init_from_image is not None:
            raise ValueError(f"give {names['init_from']} or {names['init_from_image']}, not both")
        self.initialised_from = init_from if init_from is not None else init_from_image
        if self.initialised_from is None:  # the architecture: the preset plus overrides, or the initial tokenizer's
            self.tokenizer = VideoTokenizer(preset_config(config.preset, **config.tokenizer))
        else:
            # a Hub id becomes the exported card's base_model
            flag = names["init_from"] if init_from is not None else names["init_from_image"]
            self.tokenizer, folder = load_init_tokenizer(self.initialised_from, flag)
            self.log.info("initialised weights from %s (fresh optimizers, discriminator and schedule)", folder)
            if init_from_image is not None:  # trained on still images: start as that model on every frame
                layers = inflate_image_weights_(self.tokenizer)
                self.log.info("inflated %d temporal layers of the image tokenizer to video", layers)
        self.tok_config = self.tokenizer.config
        if config.decoder_only:
            frozen = self.tokenizer.encoder_parameters()
            for p in frozen:
                p.requires_grad_(False)
            total = sum(p.numel() for p in self.tokenizer.parameters())
            self.log.info("decoder-only: %d of %d tokenizer weights frozen (encoder and quantizer input; the codes "
                          "stay fixed)", sum(p.numel() for p in frozen), total)
        self.tokenizer.to(self.device).train()
        self.loss_fn = TokenizerLoss(config.loss, self.tok_config).to(self.device).train()
        self.ema = build_ema(self.tokenizer, config.ema, self.device)
        self.tokenizer.set_gradient_checkpointing(config.run.gradient_checkpointing)  # after the EMA's copy
        self.opt_g = build_optimizer(self.tokenizer, config.gen_optim)
        self.opt_d = build_optimizer(self.loss_fn.discriminator_parameters(), config.disc_optim)
        self.checkpointed = {"tokenizer": self.tokenizer, "ema": self.ema, "loss": self.loss_fn}
        self.optimizers = {"opt_g": self.opt_g, "opt_d": self.opt_d}
        # the two entry points a distributed engine wraps: the G step's forward and the D step's loss. The G step's
        # adversarial terms call the unwrapped discriminators with their weights frozen.
        # G uses every trainable tokenizer weight at every step; the D loss leaves the temporal discriminators unused on
        # image batches, and the frozen perceptual network's buffers need no broadcast (LeCam's means are all-reduced)
        step = ReconstructStep(self.tokenizer, config.code_noise, config.code_noise_clips)
        self.g_forward = prepare_ddp(self.accelerator, step)
        self.d_forward = prepare_ddp(self.accelerator, self.loss_fn, find_unused_parameters=True,
                                     broadcast_buffers=False)
        if config.run.compile:
            self.g_forward = compile_module(self.g_forward, self.device, self.log)
        self._build_data([self.local_data(d) for d in data_dirs], self.local_data(val_dir))
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
        self.loader = acc.prepare(build_dataloader(self.train_set, d.batch_size * acc.num_processes, c.run.seed,
                                                   num_workers=d.num_workers))  # global batches, split per process
        stats = self.train_set.stats
        self.log.info("tokenizer: %dx%d frames, %d-frame clips, %d codes (%s; --preset tiny|demo|base|paper, "
                      "--resolution N)", *self.tok_config.image_size, d.num_frames, self.tokenizer.codebook_size,
                      f"the tokenizer of {self.initialised_from}" if self.initialised_from else f"preset {c.preset}")
        self.log.info("training clips: %d usable of %d files (%d skipped); validation clips: %s", len(self.train_set),
                      stats.num_files, stats.num_skipped, len(self.val_set) if self.val_set is not None else 0)
        if note := size_note(self.train_set):  # clips of another size: resized, and the log says so
            self.log.info("%s", note)

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
        """The EMA tokenizer (RUN_DIR/tokenizer/), with the clip length and frame stride it was trained on (the
        defaults of `magvit2-reconstruct`)."""
        d = self.config.data
        self.ema.ema_model.save_pretrained(folder, **export_card(self, {"num_frames": d.num_frames,
                                                                        "frame_stride": d.frame_stride}))

    def hub_export(self) -> tuple[VideoTokenizer, dict[str, Any]]:
        d = self.config.data
        return self.ema.ema_model, {"num_frames": d.num_frames, "frame_stride": d.frame_stride, "step": self.step}

    # one update ----------------------------------------------------------------------------------------------------

    def train_step(self, batches) -> dict[str, Any] | None:
        """Update number `self.step` (0-based) of G, and of D once adversarial training has started; afterwards
        `self.step` counts completed updates. Returns log values every run.log_every updates (and on skipped ones)."""
        c, acc, step = self.config, self.accelerator, self.step
        use_adv = step >= c.disc_start_step
        g_parts = d_parts = None
        totals = {"generator.total": 0.0, "discriminator.total": 0.0}  # what was backpropagated, mean per micro-batch
        for micro in range(self.grad_accum):
            batch = self.next_batch(batches)
            video = batch["video"].to(self.device, non_blocking=True)
            with contextlib.ExitStack() as no_sync:
                if micro < self.grad_accum - 1:  # gradients are all-reduced once, on the last micro-batch
                    no_sync.enter_context(acc.no_sync(self.g_forward))
                    no_sync.enter_context(acc.no_sync(self.d_forward))
                with acc.autocast():
                    # code noise: drawn for the global batch (no rank key), each process taking its rows
                    noise = make_generator(c.run.seed, _NOISE_KEY, step, micro) if c.code_noise else None
                    out = self.g_forward(video, step, noise, batch["rows"])
                    g_loss, g_parts = self.loss_fn.generator_loss(
                        video, out, last_layer=self.tokenizer.last_layer_weight, step=step, use_adversarial=use_adv,
                        generator=make_generator(c.run.seed, _G_KEY, step, micro, *self.rank_key))
                self.backward(g_loss)
                totals["generator.total"] = totals["generator.total"] + g_loss.detach() / self.grad_accum
                if use_adv:
                    with acc.autocast():
                        d_loss, d_parts = self.d_forward(
                            video, out.recon.detach(), self.loss_fn.should_apply_r1(self.d_step),
                            make_generator(c.run.seed, _D_KEY, step, micro, *self.rank_key))
                    self.backward(d_loss)
                    totals["discriminator.total"] = totals["discriminator.total"] + d_loss.detach() / self.grad_accum
        horizon = self.horizon.steps
        lr_g, lr_d = lr_at(c.gen_optim, step, horizon), lr_at(c.disc_optim, self.d_step, horizon)
        trainable = [p for p in self.tokenizer.parameters() if p.requires_grad]  # all but a frozen encoder's
        groups = [OptimizerGroup("g", self.opt_g, trainable, c.gen_optim.max_grad_norm, lr_g)]
        losses = {"generator." + k: v for k, v in g_parts.as_tensors().items()}
        if use_adv:
            groups.append(OptimizerGroup("d", self.opt_d, self.loss_fn.discriminator_parameters(),
                                         c.disc_optim.max_grad_norm, lr_d))
            losses.update({"discriminator." + k: v for k, v in d_parts.as_tensors().items()})
        losses.update({k: v for k, v in totals.items() if k in losses})  # the other terms: the last micro-batch's
        ok = self.update("generator+discriminator", groups, losses)
        self.d_step += use_adv and ok
        if not self.logs_due(ok):
            return None
        norms = self.grad_norms
        return {**losses, "lr_g": lr_g, "lr_d": lr_d if use_adv else 0.0, "grad_norm_g": norms["g"],
                "grad_norm_d": norms.get("d", 0.0), "skipped_update": float(not ok)}

    # validation -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, write_samples: bool = True) -> dict[str, float]:
        """EMA tokenizer on up to data.val_clips held-out clips, split across processes (clip i on process
        i mod W) and summed over them: PSNR, SSIM, codebook usage/perplexity; the main process writes samples."""
        if self.val_set is None:
            return {}
        model = self.ema.ema_model.eval()
        n = min(self.config.data.val_clips, len(self.val_set))
        sums, samples = torch.zeros(3, dtype=torch.float64), []  # psnr, ssim, clips
        counts = torch.zeros(model.codebook_size, dtype=torch.float64, device=self.device)
        for i in range(self.rank, n, self.world_size):
            item = self.val_set[(0, i, -1)]
            if not isinstance(item, dict):
                continue
            video = item["video"].unsqueeze(0).to(self.device)
            with self.accelerator.autocast():
                out = model.reconstruct(video)
            recon = out.recon.float().clamp(-1, 1)
            sums += torch.tensor([float(psnr(recon, video)), float(ssim(recon, video)), 1.0], dtype=torch.float64)
            counts += torch.bincount(out.codes.flatten(), minlength=model.codebook_size)
            if len(samples) < 4:
                samples.append(torch.cat([video, recon], dim=-1)[0])  # (3, t, h, 2w): original | reconstruction
        total_psnr, total_ssim, clips = self.sum_over_processes(sums.tolist())
        if self.world_size > 1:
            torch.distributed.all_reduce(counts)
        if not clips:
            return {}
        usage, perplexity = usage_from_counts(counts)
        result = {"psnr_db": total_psnr / clips, "ssim": total_ssim / clips, "codebook_usage": float(usage),
                  "perplexity": float(perplexity), "clips": clips}
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
