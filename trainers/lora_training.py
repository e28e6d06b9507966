"""LoRA in the MaskGit trainer (`magvit2-train-maskgit --init-from PIPELINE --lora-rank R`): the base pipeline's
transformer stays frozen, bit for bit; peft's adapter layers are what trains. The run's optimizer, EMA and
checkpoints hold the adapter only (`AdapterWeights`: ema-pytorch copies that small module, never the base), and the
export is an adapter folder, RUN_DIR/lora/, that names the base by path (or Hub id) and the sha256 of its weights.

A resumed LoRA run loads the same base again (from --init-from, or else from the path its checkpoint recorded) and
refuses a base whose weights changed since (`MaskGitTrainer.check_resume`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magvit2.serialization import read_model_config
from maskgit.config import MaskGitConfig
from maskgit.lora import (
    AdapterWeights,
    LoraAdapter,
    LoraSettings,
    adapter_parameters,
    add_lora,
    target_names,
    weights_sha256,
)
from maskgit.pipeline_folder import TRANSFORMER_DIR
from maskgit.transformer import KIND, MaskGitTransformer
from trainers.checkpointing import CheckpointCorruptError
from trainers.model_sources import locate

ADAPTER_NAME = "default"


def resolve_base(init_from: str | os.PathLike, settings: LoraSettings) -> tuple[Path, str]:
    """The --init-from of a LoRA run: a pipeline folder, a MaskGit run folder (its pipeline/) or a Hub repo id holding
    a pipeline -> (the local pipeline folder, the name an adapter records: the absolute path, or the repo id). The
    target regex is checked against its transformer's module names here, before any data is read."""
    from maskgit.pipeline_folder import PIPELINE_MODEL_KIND

    try:
        location = locate(init_from, PIPELINE_MODEL_KIND, "--init-from")
        folder, from_hub = location.folder, location.repo_id is not None
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; a LoRA run (--lora-rank) adapts a pipeline: pass a pipeline folder, a MaskGit "
                                "run folder or a Hub repo id") from None
    config = MaskGitConfig.from_dict(read_model_config(folder / TRANSFORMER_DIR, KIND)["config"])
    with torch.device("meta"):  # module names without weights
        target_names(MaskGitTransformer(config), settings.target_regex, "--lora-targets")
    return folder, str(init_from) if from_hub else str(folder.resolve())


def recorded_base(state: dict[str, Any], path: Path) -> str:
    """The base pipeline a LoRA checkpoint's run was trained on (its state.json), for --resume without --init-from."""
    try:
        return str(state["config"]["lora_resolved"]["base"]["name_or_path"])
    except (KeyError, TypeError):
        raise CheckpointCorruptError(f"{path}: not a LoRA checkpoint (no lora_resolved.base in state.json); resume "
                                     "it without --lora-rank") from None


class LoraTraining:
    """The adapter of one run: injected into `transformer` (whose base weights are `base_state`, from `base_name`)."""

    def __init__(self, transformer: nn.Module, settings: LoraSettings, base_name: str,
                 base_state: dict[str, torch.Tensor]) -> None:
        self.settings = settings
        self.base = {"name_or_path": base_name, "transformer_sha256": weights_sha256(base_state)}
        self.config = settings.peft_config(base_name)
        self.modules = add_lora(transformer, self.config, ADAPTER_NAME)
        self.weights = AdapterWeights(adapter_parameters(transformer, ADAPTER_NAME))
        self.trainable = sum(p.numel() for p in self.weights.parameters())
        self.total = sum(p.numel() for p in transformer.parameters())
        frozen = [n for n, p in transformer.named_parameters() if p.requires_grad and ".lora_" not in n]
        assert not frozen, f"base parameters left trainable: {frozen[:3]}"

    def describe(self) -> str:
        s = self.settings
        return (f"LoRA rank {s.rank}, alpha {s.lora_alpha:g}, dropout {s.dropout:g} on {len(self.modules)} linear "
                f"layers ({s.targets}): {self.trainable:,} adapter parameters train, {self.trainable / self.total:.2%} "
                f"of the {self.total:,} in the transformer; the base ({self.base['name_or_path']}) stays frozen")

    def resolved(self) -> dict[str, Any]:
        """What config.yaml and every checkpoint record (compared on resume)."""
        s = self.settings
        return {"rank": s.rank, "alpha": s.lora_alpha, "targets": s.target_regex, "dropout": s.dropout,
                "base": self.base, "modules": len(self.modules), "trainable_params": self.trainable,
                "transformer_params": self.total}

    @contextlib.contextmanager
    def swapped_in(self, ema_weights: AdapterWeights) -> Iterator[None]:
        """The EMA's adapter weights in the live adapter for the duration (validation, samples); the online values are
        put back exactly afterwards (copies, not arithmetic)."""
        online = {k: p.detach().clone() for k, p in self.weights.items()}
        with torch.no_grad():
            for k, p in self.weights.items():
                p.copy_(ema_weights[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.weights.items():
                    p.copy_(online[k])

    def adapter(self, ema_weights: AdapterWeights, training: dict[str, Any]) -> LoraAdapter:
        """The export: the EMA's adapter weights with the base they were trained on."""
        weights = AdapterWeights.peft_state_dict(ema_weights)
        facts = {k: v for k, v in self.resolved().items() if k != "base"}
        return LoraAdapter(self.config, weights, self.base, training={**facts, **training})
