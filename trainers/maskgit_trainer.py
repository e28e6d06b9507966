"""The MaskGit (stage two) training loop: masked-token training over frozen-tokenizer codes, conditioned on frozen
text embeddings; EMA, fixed-mask validation, sample videos, atomic checkpoints, exact resume, pipeline export.

One update (step s) = `grad_accum` micro-batches, each: codes (from shards, or the frozen tokenizer run on the clips
under no_grad), the batch's text from the caption bank (the text encoder ran once per unique caption at startup),
`maskgit.objective.masked_token_loss` with a generator derived from (seed, s, micro, rank) (mask ratios, masked
positions, condition dropout, self-conditioning), backward; then gradients are averaged across processes, clipped,
checked (non-finite guard, before the update) and AdamW steps once at `lr_at(s)`; the EMA follows. Data order comes
from (seed, epoch), so a resumed run replays the uninterrupted one exactly.

A LoRA run (`config.lora`, `--lora-rank`): the --init-from pipeline's transformer stays frozen and a peft adapter is
what trains, what the optimizer, the EMA and the checkpoints hold, and what is exported (RUN_DIR/lora/); the step is
the same (`trainers.lora_training`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from magvit2.serialization import load_state_strict
from maskgit.config import FACTORIZE_ABOVE, MaskGitConfig
from maskgit.lora import RUN_LORA_DIR, require_peft
from maskgit.objective import masked_token_loss
from maskgit.pipeline import TextToVideoPipeline
from maskgit.pipeline_settings import PipelineDefaults
from maskgit.presets import maskgit_preset
from maskgit.text import TextEmbedding, build_text_encoder
from maskgit.transformer import MaskGitTransformer
from trainers.argnames import MASKGIT_KEYWORDS, ArgNames
from trainers.base import Trainer
from trainers.configs import MaskGitTrainConfig, to_dict
from trainers.data.batches import build_dataloader
from trainers.data.captions import CaptionBank, read_prompt_file, warn_empty_captions
from trainers.data.codes import CodeClips, CodeShardDataset, ShardCodeClips, collate_codes, split_code_clips
from trainers.data.folders import folder_datasets, size_note
from trainers.export_card import export_card
from trainers.lora_training import LoraTraining, recorded_base, resolve_base
from trainers.maskgit_eval import validation_losses, write_samples
from trainers.model_sources import hub_repo_id, load_frozen_tokenizer, load_init_weights
from trainers.optim import OptimizerGroup, build_optimizer, lr_at
from trainers.rng import derive_seed, make_generator
from trainers.run_setup import absolute, build_ema, compile_module, prepare_ddp

_MASK_KEY, _DROPOUT_KEY = 301, 302  # purpose tags for derive_seed (validation uses 303)
_RUNTIME_FIELDS = ("dropout", "attn_flash")  # MaskGitConfig fields --init-from may change (no effect on weights)


class MaskGitTrainer(Trainer):
    """Train a `MaskGitTransformer` on the codes of a frozen tokenizer. `fit()` runs until max_steps/max_minutes.

    Exactly one of `codes_dir` (shards from `magvit2-tokenize`: a folder, or a list of folders of one tokenizer
    trained on as one set) and `data_dirs` (captioned clips, tokenized on the fly) is given; validation uses
    `val_codes_dir`, `val_data_dir`, or `data.val_fraction` of the training files.
    """

    name, export_name = "maskgit", "pipeline"
    ddp_attributes = ("model",)

    def __init__(self, config: MaskGitTrainConfig, tokenizer: str | Path, run_dir: str | Path,
                 codes_dir: str | Path | Sequence[str | Path] | None = None, data_dirs: list[str | Path] | None = None,
                 val_codes_dir: str | Path | None = None, val_data_dir: str | Path | None = None,
                 resume: str | None = None, init_from: str | Path | None = None,
                 sample_prompts: str | Path | list[str] | None = None, names: ArgNames = MASKGIT_KEYWORDS) -> None:
        codes_dirs = [codes_dir] if isinstance(codes_dir, (str, Path)) else list(codes_dir or [])
        if bool(codes_dirs) == bool(data_dirs):
            raise ValueError(f"pass exactly one of {names['codes']} and {names['data']}")
        if val_codes_dir is not None and val_data_dir is not None:
            raise ValueError(f"pass at most one of {names['val_codes']} and {names['val_data']}")
        if resume is not None and init_from is not None and config.lora is None:
            raise ValueError(f"pass either {names['resume']} (continue this run) or {names['init_from']} (start a new "
                             "one from weights)")
        if config.lora is not None and init_from is None and resume is None:
            raise ValueError(f"a LoRA run (--lora-rank) trains an adapter on a pipeline: pass {names['init_from']} "
                             "PIPELINE")
        if config.lora is not None:
            require_peft()  # before any heavy work
        super().__init__(config, run_dir, resume, "maskgit.train", names)
        lora_base = self._lora_base(init_from) if config.lora is not None else None  # fail before heavy work
        self.sample_prompts = (read_prompt_file(sample_prompts, names["sample_prompts"])
                               if isinstance(sample_prompts, (str, Path)) else list(sample_prompts or []))
        defaults = PipelineDefaults.from_dict(config.pipeline)  # bad sampling settings fail before training

        self.tokenizer, self.tokenizer_dir = load_frozen_tokenizer(tokenizer, self.device, names["tokenizer"])
        self.text_encoder = build_text_encoder(config.text_encoder, max_length=config.text_max_length,
                                               device=self.device)
        self._build_data([absolute(d) for d in codes_dirs], [self.local_data(d) for d in data_dirs or []],
                         absolute(val_codes_dir) if val_codes_dir else None, self.local_data(val_data_dir))
        captions = list(self.train_set.captions) + (self.val_clips.captions if self.val_clips is not None else [])
        self.num_empty_captions = warn_empty_captions(self.train_set.captions, "training clips")
        self.captions = CaptionBank(self.text_encoder.encode, captions + self.sample_prompts)
        self.log.info("text: %d unique captions embedded once with %r (%d-d)", len(self.captions),
                      config.text_encoder, self.text_encoder.dim)

        if lora_base is not None:
            init_from = lora_base[0]
        self.model_config, init_state = self._model_config(init_from)
        torch.manual_seed(config.run.seed)  # identical initial weights (and LoRA adapters) on every process
        self.transformer = MaskGitTransformer(self.model_config).to(self.device).train()
        if init_state is not None:
            load_state_strict(self.transformer, init_state, init_from, f"{names['init_from']} weights")
            self.transformer.base_model = hub_repo_id(init_from)  # the fine-tune's base in the model card
        self.lora, trained = None, self.transformer  # what the optimizer, the EMA and the checkpoints hold
        if lora_base is not None:  # the base frozen; the adapter alone trains (trainers.lora_training)
            self.lora = LoraTraining(self.transformer, config.lora, lora_base[1], init_state)
            trained, self.export_name = self.lora.weights, RUN_LORA_DIR
            self.log.info("%s", self.lora.describe())
        self.ema = build_ema(trained, config.ema, self.device)
        self.transformer.set_gradient_checkpointing(config.run.gradient_checkpointing)  # after the EMA's copy
        self.optimizer = build_optimizer(trained, config.optim)
        self.checkpointed = {"transformer": trained, "ema": self.ema}
        self.optimizers = {"optimizer": self.optimizer}
        self.model = prepare_ddp(self.accelerator, self.transformer)  # DDP on several processes
        if config.run.compile:
            self.model = compile_module(self.model, self.device, self.log)
        if defaults.num_frames is None:
            defaults = replace(defaults, num_frames=self.num_frames)
        self.pipeline = TextToVideoPipeline(self.tokenizer, self.text_encoder,
                                            self.transformer if self.lora else self.ema.ema_model, defaults)
        self.start()
        if config.text_encoder.startswith("tiny"):
            self.log.warning("text encoder %r is the test-only hash encoder; use 'default' (MiniLM) or a Hugging "
                             "Face encoder for real runs", config.text_encoder)

    # setup -------------------------------------------------------------------------------------------------------

    def _shards(self, codes_dir: Path, flag: str) -> ShardCodeClips:
        """Code shards checked against the tokenizer: same vocabulary and the latent grid it gives."""
        shards, tok = CodeShardDataset(codes_dir), self.tokenizer
        if shards.codebook_size != tok.codebook_size:
            raise ValueError(f"vocabulary mismatch: {flag} {codes_dir} holds codes of a {shards.codebook_size}-code "
                             f"tokenizer ({shards.index.get('tokenizer')}) but {self.names['tokenizer']} "
                             f"{self.tokenizer_dir} has "
                             f"{tok.codebook_size} codes; tokenize the clips with this tokenizer (magvit2-tokenize)")
        frames = int(shards.index["num_frames"])
        try:
            expected = tok.latent_shape(frames)
        except ValueError as e:
            raise ValueError(f"{flag} {codes_dir} was tokenized with {frames}-frame clips, which "
                             f"{self.names['tokenizer']} {self.tokenizer_dir} cannot take: {e}") from e
        if tuple(shards.latent_shape) != tuple(expected):
            raise ValueError(f"latent grid mismatch: {flag} {codes_dir} holds {tuple(shards.latent_shape)} codes per "
                             f"clip but {self.names['tokenizer']} {self.tokenizer_dir} gives {tuple(expected)} for "
                             f"{frames} frames")
        if shards.index.get("tokenizer_config") != tok.config.to_dict():
            self.log.warning("%s %s was written by a tokenizer with another config (%s); its codes may not decode "
                             "as intended with %s %s", flag, codes_dir, shards.index.get("tokenizer"),
                             self.names["tokenizer"], self.tokenizer_dir)
        return CodeClips.from_shards(shards)

    @torch.no_grad()
    def _tokenize_clips(self, dataset, limit: int) -> CodeClips:
        """Codes of the first `limit` usable clips of a folder dataset (center crops, frame 0)."""
        codes, captions, paths = [], [], []
        bs = self.config.data.batch_size
        for start in range(0, min(limit, len(dataset)), bs):
            items = [dataset[(0, i, -1)] for i in range(start, min(start + bs, limit, len(dataset)))]
            items = [it for it in items if isinstance(it, dict)]
            if items:
                video = torch.stack([it["video"] for it in items]).to(self.device)  # (b, 3, t, h, w)
                codes.append(self.tokenizer.tokenize(video).cpu())  # (b, t', h', w')
                captions += [it["caption"] for it in items]
                paths += [it["path"] for it in items]
        if not codes:
            raise ValueError("no readable validation clips")
        return CodeClips(torch.cat(codes), captions, paths)

    def _build_data(self, codes_dirs: list[Path], data_dirs: list[Path], val_codes_dir: Path | None,
                    val_data_dir: Path | None) -> None:
        c, d, acc = self.config, self.config.data, self.accelerator
        f, size = self.tokenizer.time_compression, self.tokenizer.config.image_size
        common = dict(image_size=size, seed=c.run.seed, include_images=d.include_images,
                      max_bad_fraction=d.max_bad_fraction, frame_stride=d.frame_stride, caption_column=d.caption_column)
        if d.caption_column != "text" and codes_dirs:
            raise ValueError(f"data.caption_column {d.caption_column!r} (--caption_column) reads --data's "
                             "metadata.jsonl; --codes shards hold the captions magvit2-tokenize stored")
        separate_val = val_codes_dir is not None or val_data_dir is not None
        val_clips = None
        if codes_dirs:
            clips = ShardCodeClips.concat([self._shards(folder, self.names["codes"]) for folder in codes_dirs])
            self.num_frames = self.tokenizer.num_frames_for(clips.latent_shape[0])
            self.train_set, val_clips = (clips, None) if separate_val else split_code_clips(clips, d.val_fraction,
                                                                                             c.run.seed)
            self.loader = acc.prepare(build_dataloader(self.train_set, d.batch_size * acc.num_processes, c.run.seed,
                                                       num_workers=d.num_workers, collate_fn=collate_codes))
        else:
            self.num_frames = d.num_frames
            if (d.num_frames - 1) % f:
                raise ValueError(f"data.num_frames={d.num_frames} must be 1 + {f}k for this tokenizer "
                                 f"(e.g. {1 + f * 4})")
            split = None if separate_val or d.val_fraction == 0 else "train"
            self.train_set = folder_datasets(data_dirs, split, num_frames=d.num_frames, hflip=d.hflip,
                                             val_fraction=d.val_fraction, **common)
            self.loader = acc.prepare(build_dataloader(self.train_set, d.batch_size * acc.num_processes, c.run.seed,
                                                       num_workers=d.num_workers))  # global batches, split
            if note := size_note(self.train_set):  # clips of another size: resized, and the log says so
                self.log.info("%s", note)
            if not separate_val and d.val_fraction > 0:
                val_set = folder_datasets(data_dirs, "val", num_frames=d.val_num_frames or d.num_frames,
                                          val_fraction=d.val_fraction, **common)
                val_clips = self._tokenize_clips(val_set, d.val_clips)
        if val_codes_dir is not None:
            val_clips = self._shards(val_codes_dir, self.names["val_codes"])
        elif val_data_dir is not None:
            val_set = folder_datasets([val_data_dir], None, num_frames=d.val_num_frames or self.num_frames,
                                      random_crop=False, **common)
            val_clips = self._tokenize_clips(val_set, d.val_clips)
        self.latent_shape = self.tokenizer.latent_shape(self.num_frames)  # (t', h', w') of the training clips
        if val_clips is not None:
            val_clips = val_clips.select(range(min(d.val_clips, len(val_clips))))
            val_clips = CodeClips(val_clips.codes, val_clips.captions, val_clips.paths)  # a few clips: in memory
            if val_clips.latent_shape[1:] != self.latent_shape[1:] or val_clips.latent_shape[0] > self.latent_shape[0]:
                raise ValueError(f"validation codes {val_clips.latent_shape} do not fit the training grid "
                                 f"{self.latent_shape}")
        self.val_clips = val_clips
        self.log.info("training clips: %d (%s); validation clips: %d; codes per clip: %s", len(self.train_set),
                      "code shards" if codes_dirs else "tokenized on the fly", len(val_clips) if val_clips else 0,
                      self.latent_shape)

    def _model_config(self, init_from: str | Path | None) -> tuple[MaskGitConfig, dict[str, torch.Tensor] | None]:
        """From the preset + maskgit overrides (+ codebook, grid and text width filled in), or from --init-from's
        weights."""
        c, tok, text_dim = self.config, self.tokenizer, self.text_encoder.dim
        if init_from is None:
            extra = {}
            wanted = c.maskgit.get("factorize_codes")
            wanted = tok.codebook_size > FACTORIZE_ABOVE if wanted is None else wanted
            if tok.config.use_fsq and wanted and "code_factors" not in c.maskgit:
                extra["code_factors"] = tuple(reversed(tok.config.fsq_levels))  # one sub-token per FSQ dimension
            fields = {**maskgit_preset(c.preset), **extra, **c.maskgit}
            return MaskGitConfig(codebook_size=tok.codebook_size, latent_shape=self.latent_shape, text_dim=text_dim,
                                 **fields), None
        init, tokenizer = self.names["init_from"], self.names["tokenizer"]
        loaded, state, source = load_init_weights(init_from, init)
        if loaded.codebook_size != tok.codebook_size:
            raise ValueError(f"vocabulary mismatch: {init} {source} predicts {loaded.codebook_size} codes but "
                             f"{tokenizer} {self.tokenizer_dir} has {tok.codebook_size}")
        if loaded.text_dim != text_dim:
            raise ValueError(f"{init} {source} expects {loaded.text_dim}-d text but the text encoder "
                             f"{c.text_encoder!r} gives {text_dim}-d embeddings")
        t, h, w = self.latent_shape
        if tuple(loaded.latent_shape[1:]) != (h, w) or loaded.latent_shape[0] < t:
            raise ValueError(f"{init} {source} holds a {loaded.latent_shape} latent grid; the codes need "
                             f"{t}x{h}x{w}")
        self.log.info("initialised the transformer from %s (architecture from there; fresh optimizer, EMA, schedule)",
                      source)
        return replace(loaded, **{k: v for k, v in c.maskgit.items() if k in _RUNTIME_FIELDS}), state

    def export_modules(self) -> list[torch.nn.Module]:
        return [self.ema, self.tokenizer]  # the pipeline folder holds the EMA transformer and the tokenizer

    def _lora_base(self, init_from: str | Path | None) -> tuple[Path, str]:
        """The pipeline a LoRA run adapts: --init-from, or on --resume without it the one the checkpoint recorded."""
        if init_from is None:
            _, state = self.on_every_process(lambda: self.ckpt.load(self.resume_path, verify=False))
            init_from = recorded_base(state, self.resume_path)
        return self.on_every_process(lambda: resolve_base(init_from, self.config.lora))

    def resolved_config(self) -> dict[str, Any]:
        return {**to_dict(self.config), "maskgit_resolved": self.model_config.to_dict(),
                "lora_resolved": self.lora.resolved() if self.lora else None,
                "tokenizer_resolved": {"path": str(self.tokenizer_dir), "codebook_size": self.tokenizer.codebook_size,
                                       "latent_shape": list(self.latent_shape), "num_frames": self.num_frames},
                "text_encoder_resolved": {"spec": self.text_encoder.spec, "dim": self.text_encoder.dim,
                                          "max_length": self.text_encoder.max_length}}

    # checkpoint hooks --------------------------------------------------------------------------------------------

    def check_resume(self, state: dict[str, Any], path: Path) -> None:
        text = state["config"]["text_encoder_resolved"]
        if (text["spec"], text["dim"]) != (self.text_encoder.spec, self.text_encoder.dim):
            raise ValueError(f"{path}: the run was trained with text encoder {text['spec']!r} ({text['dim']}-d); "
                             f"got {self.text_encoder.spec!r} ({self.text_encoder.dim}-d)")
        saved, ours = state["config"]["maskgit_resolved"], self.model_config.to_dict()
        if saved != ours:
            diff = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
            raise ValueError(f"{path}: the checkpoint's transformer differs from this run's in {diff}")
        saved, ours = state["config"].get("lora_resolved"), self.lora.resolved() if self.lora else None
        if (saved is None) != (ours is None):
            raise ValueError(f"{path}: the checkpoint is {'not ' * (saved is None)}a LoRA run; resume it "
                             f"{'without' if saved is None else 'with the same'} --lora-rank")
        if saved is not None and saved["base"] != ours["base"]:
            raise ValueError(f"{path}: the run's base pipeline was {saved['base']['name_or_path']} (transformer sha256 "
                             f"{saved['base']['transformer_sha256'][:12]}); --init-from now gives "
                             f"{ours['base']['name_or_path']} ({ours['base']['transformer_sha256'][:12]})")
        if saved is not None and saved != ours:
            diff = sorted(k for k in saved if saved[k] != ours.get(k))
            raise ValueError(f"{path}: the checkpoint's LoRA settings differ from this run's in {diff}")

    def write_export(self, folder: Path) -> None:
        """The EMA pipeline: tokenizer + text encoder spec + EMA transformer (RUN_DIR/pipeline/); a LoRA run's EMA
        adapter (RUN_DIR/lora/)."""
        if self.lora is not None:
            training = {"step": self.step, "global_batch_size": self.sampler.batch_size,
                        "ema_beta": self.config.ema.beta}
            self.lora.adapter(self.ema.ema_model, training).write_files(folder)
        else:
            self.pipeline.save_pretrained(folder, **export_card(self, {"num_frames": self.num_frames}))

    def hub_export(self) -> tuple[Any, dict[str, Any]]:
        """The pipeline, or in a LoRA run the EMA adapter (its card names the base)."""
        training = {"step": self.step, "num_frames": self.num_frames, "train_clips": len(self.train_set)}
        if self.lora is not None:
            return self.lora.adapter(self.ema.ema_model, training), training
        return self.pipeline, training

    @contextlib.contextmanager
    def ema_transformer(self) -> Iterator[MaskGitTransformer]:
        """The transformer with EMA weights: the EMA's copy, or in a LoRA run the live one with the EMA's adapter
        weights swapped in for the duration."""
        if self.lora is None:
            yield self.ema.ema_model
            return
        with self.lora.swapped_in(self.ema.ema_model):
            yield self.transformer

    # one update ----------------------------------------------------------------------------------------------------

    def batch_codes(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's codes (b, t', h', w'): from the shards, or the frozen tokenizer on its clips (no grad)."""
        if "codes" in batch:
            return batch["codes"].to(self.device, non_blocking=True)
        return self.tokenizer.tokenize(batch["video"].to(self.device, non_blocking=True))

    def train_step(self, batches) -> dict[str, Any] | None:
        """Update number `self.step` (0-based); afterwards `self.step` counts completed updates. Returns log values
        every run.log_every updates (and on skipped ones)."""
        c, acc, step = self.config, self.accelerator, self.step
        start = time.perf_counter()
        torch.manual_seed(derive_seed(c.run.seed, _DROPOUT_KEY, step, self.rank))  # only nn.Dropout uses it
        sums = dict.fromkeys(("loss", "accuracy", "mask_fraction", "drop_fraction"), 0.0)
        tokens = 0
        for micro in range(self.grad_accum):
            batch = self.next_batch(batches)
            codes = self.batch_codes(batch)  # (b, t', h', w')
            text = TextEmbedding(*self.captions.embed(batch["caption"])).to(self.device)
            # the masks of the whole global batch come from one generator (the trailing 0 keeps the key of earlier
            # single-process runs); each process trains on its rows (`rows`: the rows every process loaded), so W
            # processes equal one with the global batch, also when some clips failed to decode
            generator = make_generator(c.run.seed, _MASK_KEY, step, micro, 0)
            with contextlib.ExitStack() as no_sync:
                if micro < self.grad_accum - 1:  # gradients are all-reduced once, on the last micro-batch
                    no_sync.enter_context(acc.no_sync(self.model))
                with acc.autocast():
                    loss, stats = masked_token_loss(
                        self.model, codes, text, generator, schedule=c.mask_schedule, self_cond_prob=c.self_cond_prob,
                        cond_drop_prob=c.cond_drop_prob, label_smoothing=c.label_smoothing, rows=batch["rows"],
                        replicas=self.world_size, tube_prob=c.tube_mask_prob, prefix_prob=c.prefix_mask_prob,
                        frame_prob=c.frame_mask_prob, min_mask_ratio=c.min_mask_ratio, loss_average=c.loss_average,
                        config=self.model_config)
                self.backward(loss)
            sums["loss"] = sums["loss"] + loss.detach() / self.grad_accum  # what was backpropagated
            for k in ("accuracy", "mask_fraction", "drop_fraction"):
                sums[k] = sums[k] + getattr(stats, k) / self.grad_accum
            tokens += batch["rows"][1] * codes[0].numel()
        params = [p for p in self.transformer.parameters() if p.requires_grad]
        lr = lr_at(c.optim, step, self.horizon.steps)
        group = OptimizerGroup("transformer", self.optimizer, params, c.optim.max_grad_norm, lr)
        ok = self.update("transformer", [group], {"loss": sums["loss"]})
        if not self.logs_due(ok):
            return None
        return {**sums, "lr": lr, "grad_norm": self.grad_norms["transformer"], "skipped_update": float(not ok),
                "tokens_per_s": tokens / (time.perf_counter() - start)}

    # validation ---------------------------------------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """EMA model: fixed-mask loss/accuracy on the held-out codes; sample videos of the sample prompts."""
        c, acc = self.config, self.accelerator
        result = {}
        with self.ema_transformer() as model:
            if self.val_clips is not None:
                result = validation_losses(model, self.val_clips, self.captions, c.val_mask_ratios,
                                           c.data.batch_size, c.run.seed, self.device, acc.autocast,
                                           shard=(self.rank, self.world_size), reduce=self.sum_over_processes)
            if self.sample_prompts and self.is_main:
                write_samples(self.pipeline, self.sample_prompts, self.run_dir / "samples" / f"step-{self.step:08d}",
                              c.run.seed, self.step, acc.autocast)
        return result

    # what fit() reports ---------------------------------------------------------------------------------------------

    def postfix(self, logs: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{logs['loss']:.3f}", "acc": f"{logs['accuracy']:.2f}"}

    def summary(self, last_val: dict[str, float]) -> dict[str, Any]:
        lora = {"lora_trainable_params": self.lora.trainable, "lora_share": self.lora.trainable / self.lora.total
                } if self.lora else {}
        return {**{f"val_{k}": v for k, v in last_val.items()}, "train_clips": len(self.train_set),
                "unique_captions": len(self.captions), "empty_captions": self.num_empty_captions, **lora}
