"""LoRA adapters for the MaskGit transformer, built with peft (an optional extra: `pip install magvit2-maskgit[lora]`).

The adapter folder (what `magvit2-train-maskgit --lora-rank` exports to RUN_DIR/lora/ and what
`TextToVideoPipeline.load_lora_weights` reads) is peft's format plus one file of ours::

    adapter_config.json         peft's LoraConfig (r, lora_alpha, the target regex, dropout, base_model_name_or_path)
    adapter_model.safetensors   the adapter tensors under peft's names (`base_model.model.<module>.lora_A.weight`), so
                                `peft.PeftModel.from_pretrained(MaskGitTransformer(config), folder)` loads it as well
    base_pipeline.json          the pipeline it was trained on: its path or Hub id and the sha256 of its transformer's
                                weights (`weights_sha256`), checked before the adapter is applied to a pipeline

Targets are x-transformers' module names, matched by a regex over the full name (peft's rule for a string
`target_modules`): attention `to_q`, `to_k`, `to_v`, `to_out` (self- and cross-attention alike: blocks 3i, 3i + 1 of
`net.attn_layers.layers`), feed-forward `ff.0.proj` and `ff.2` (block 3i + 2). `TARGET_PRESETS` names two sets.
Embeddings, position tables, norms and the output heads never get adapters (they stay the base's).

Nothing here imports peft until it is needed; without it every entry point raises one ImportError line.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from magvit2.checks import nonfinite_tensors, read_json
from magvit2.serialization import atomic_dir, atomic_write_text, package_version

ADAPTER_CONFIG = "adapter_config.json"  # peft's names
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_RECORD = "base_pipeline.json"  # ours
ADAPTER_KIND = "MaskGitLoraAdapter"
ADAPTER_FORMAT_VERSION = 1
RUN_LORA_DIR = "lora"  # where the MaskGit trainer exports an adapter inside its run folder
PEFT_PREFIX = "base_model.model."  # what PeftModel.save_pretrained puts before module names
PEFT_MISSING = "LoRA needs peft, an optional extra of magvit2-maskgit: pip install 'magvit2-maskgit[lora]'"
TARGET_PRESETS = {
    "attention": r".*\.(to_q|to_k|to_v|to_out)$",  # self- and cross-attention projections
    "attention+ff": r".*\.(to_q|to_k|to_v|to_out|ff\.0\.proj|ff\.2)$",  # ... and the feed-forward's two
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def require_peft() -> Any:
    """The peft module, or ImportError with one line saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ImportError(PEFT_MISSING) from None
    return peft


# ---------------------------------------------------------------------------------------------------------------
# settings and injection


@dataclass(frozen=True)
class LoraSettings:
    """What a LoRA run trains: rank r, scale alpha / r on the update B @ A, which linear layers, dropout on their input.

    The defaults follow aMUSEd's LoRA recipe in diffusers (r 16, alpha 32, the attention projections)."""

    rank: int = 16
    alpha: float | None = None  # None: 2 * rank
    targets: str = "attention"  # a TARGET_PRESETS name, or a regex over full module names
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or not 1 <= self.rank <= 4096:
            raise ValueError(f"lora.rank must be an int in [1, 4096]; got {self.rank!r}")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool)
                                           and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"lora.alpha must be a number > 0 (or None for 2 x rank); got {self.alpha!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"lora.dropout must be in [0, 1); got {self.dropout!r}")
        if not isinstance(self.targets, str) or not self.targets.strip():
            raise ValueError(f"lora.targets must be one of {sorted(TARGET_PRESETS)} or a regex; got {self.targets!r}")
        try:
            re.compile(self.target_regex)
        except re.error as e:
            raise ValueError(f"lora.targets {self.targets!r} is not a valid regex: {e}") from None

    @property
    def lora_alpha(self) -> float:
        return float(2 * self.rank if self.alpha is None else self.alpha)

    @property
    def target_regex(self) -> str:
        return TARGET_PRESETS.get(self.targets, self.targets)

    def peft_config(self, base_name_or_path: str | None = None) -> Any:
        """peft's `LoraConfig` for these settings."""
        peft = require_peft()
        return peft.LoraConfig(r=self.rank, lora_alpha=self.lora_alpha, target_modules=self.target_regex,
                               lora_dropout=float(self.dropout), bias="none", base_model_name_or_path=base_name_or_path)


def _internal(name: str) -> bool:
    """Module names that peft creates inside a LoRA layer (its wrapped base layer and the adapter parts)."""
    return any(part == "base_layer" or part.startswith("lora_") for part in name.split("."))


def target_names(model: nn.Module, regex: str, what: str = "lora.targets") -> list[str]:
    """The modules of `model` whose full name matches `regex` (re.fullmatch, as peft does); ValueError unless there is
    at least one and every one is a linear layer (or already a LoRA layer around one)."""
    pattern = re.compile(regex)
    matched, wrong = [], []
    for name, module in model.named_modules():
        if not name or not pattern.fullmatch(name):
            continue
        if _internal(name):
            wrong.append(f"{name} (inside a LoRA layer)")
        elif isinstance(module, nn.Linear) or isinstance(getattr(module, "base_layer", None), nn.Linear):
            matched.append(name)
        else:
            wrong.append(f"{name} ({type(module).__name__})")
    if wrong:
        raise ValueError(f"{what} {regex!r} matches modules that are not linear layers: {', '.join(wrong[:4])}"
                         f"{' ...' if len(wrong) > 4 else ''}; narrow the regex")
    if not matched:
        examples = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _internal(n)][:3]
        raise ValueError(f"{what} {regex!r} matches no module of the transformer (full names such as "
                         f"{', '.join(examples)}); try {TARGET_PRESETS['attention']!r}")
    return matched


def add_lora(model: nn.Module, config: Any, adapter_name: str = "default") -> list[str]:
    """Wrap the target linear layers of `model` in place with a fresh adapter `adapter_name` (peft's LoRA layers:
    A random, B zero, so the output is unchanged); peft freezes every other parameter. Returns the wrapped names."""
    peft = require_peft()
    config = config.peft_config() if isinstance(config, LoraSettings) else config
    names = target_names(model, config.target_modules if isinstance(config.target_modules, str)
                         else _suffix_regex(config.target_modules))
    with warnings.catch_warnings():  # a second adapter on the same model is what we mean to do
        warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute.*")
        peft.inject_adapter_in_model(config, model, adapter_name=adapter_name)
    return names


def _suffix_regex(targets: Any) -> str:
    """peft's rule for a list of target names (exact name or a '.name' suffix) as one regex."""
    return "|".join(f"(.*\\.)?{re.escape(t)}" for t in sorted(targets or ()))


def adapter_parameters(model: nn.Module, adapter_name: str = "default") -> dict[str, nn.Parameter]:
    """The live parameters of adapter `adapter_name`, under peft's saved names (the adapter name left out:
    `<module>.lora_A.weight`)."""
    infix = re.compile(rf"\.(lora_[A-Za-z_]+)\.{re.escape(adapter_name)}\.")
    out = {}
    for name, param in model.named_parameters():
        key, n = infix.subn(r".\1.", name)
        if n:
            out[key] = param
    return out


class AdapterWeights(nn.ParameterDict):
    """The adapter's parameters as one small module (shared with the transformer, not copied): what a LoRA run's
    checkpoints, EMA (ema-pytorch copies this module only, never the frozen base) and optimizer hold. Keys are peft's
    names with '/' for '.', which parameter names cannot hold."""

    def __init__(self, parameters: Mapping[str, nn.Parameter]) -> None:
        super().__init__({key.replace(".", "/"): p for key, p in parameters.items()})

    def peft_state_dict(self) -> dict[str, torch.Tensor]:
        """{peft name: tensor} (detached; the same storage)."""
        return {key.replace("/", "."): p.detach() for key, p in self.items()}


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's weights under their own names, any LoRA layers left out (`x.base_layer.w` -> `x.w`)."""
    return {key.replace(".base_layer.", "."): value for key, value in model.state_dict().items() if not _lora_key(key)}


def _lora_key(key: str) -> bool:
    return any(part.startswith("lora_") for part in key.split("."))


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, dtypes, shapes and bytes, in name order): the identity of a base."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# the adapter folder


class LoraAdapter:
    """One trained adapter: peft's LoraConfig, its tensors (peft names, no prefix), the base it was trained on
    ({"name_or_path", "transformer_sha256"}) and optional training facts. `save_pretrained` / `from_pretrained`
    (a folder, a LoRA run folder or a Hub repo id) / `push_to_hub` (with a model card naming the base)."""

    def __init__(self, config: Any, weights: Mapping[str, torch.Tensor], base: Mapping[str, Any],
                 training: Mapping[str, Any] | None = None, source: str | None = None) -> None:
        self.config, self.weights = config, dict(weights)
        self.base, self.training, self.source = dict(base), dict(training or {}), source
        _check_base(self.base, "base")

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.weights.values())

    @property
    def name(self) -> str:
        return self.source or "the adapter"

    def record(self) -> dict[str, Any]:
        """What base_pipeline.json holds."""
        c = self.config
        return {"_kind": ADAPTER_KIND, "_format_version": ADAPTER_FORMAT_VERSION, "_package_version": package_version(),
                "base": self.base,
                "adapter": {"rank": c.r, "alpha": c.lora_alpha, "dropout": c.lora_dropout,
                            "targets": c.target_modules if isinstance(c.target_modules, str)
                            else sorted(c.target_modules or ()), "parameters": self.num_parameters},
                "training": self.training or None}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes the three files into `directory` (built beside it and renamed in: never half-written)."""
        return atomic_dir(self.write_files, directory)

    def write_files(self, folder: Path) -> None:
        """The three files into the existing folder `folder` (`save_pretrained` builds it beside its destination)."""
        config = copy.copy(self.config)
        config.base_model_name_or_path = self.base["name_or_path"]
        config.save_pretrained(str(folder))  # peft's own adapter_config.json
        tensors = {PEFT_PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in self.weights.items()}
        save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        atomic_write_text(folder / BASE_RECORD, json.dumps(self.record(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> LoraAdapter:
        """An adapter folder, a LoRA run folder (its lora/) or a Hub repo id (`magvit2.hub`: cache first; `revision=`,
        `cache_dir=`, `token=`, `local_files_only=`, `subfolder=`)."""
        from magvit2.model_paths import ModelKind, resolve_model_path

        peft = require_peft()
        kind = ModelKind(ADAPTER_KIND, config_name=BASE_RECORD, locations=(RUN_LORA_DIR,), what="LoRA adapter")
        location = resolve_model_path(name_or_path, kind, **hub_kwargs)
        folder, from_hub = location.folder, location.repo_id is not None
        record = read_json(folder / BASE_RECORD, BASE_RECORD)
        if record.get("_format_version") != ADAPTER_FORMAT_VERSION:
            raise ValueError(f"{folder / BASE_RECORD}: format version {record.get('_format_version')!r} is not "
                             f"supported (this package reads {ADAPTER_FORMAT_VERSION}); upgrade magvit2-maskgit")
        _check_base(record.get("base"), f"{folder / BASE_RECORD}: base")
        payload = read_json(folder / ADAPTER_CONFIG, ADAPTER_CONFIG) if (folder / ADAPTER_CONFIG).is_file() else None
        if not isinstance(payload, dict) or payload.get("peft_type") != "LORA":
            raise ValueError(f"{folder / ADAPTER_CONFIG}: expected peft's LoRA adapter config (peft_type 'LORA'); "
                             f"got {None if payload is None else payload.get('peft_type')!r}")
        try:
            config = peft.LoraConfig.from_pretrained(str(folder))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{folder / ADAPTER_CONFIG}: not a LoRA config peft {peft.__version__} can read: "
                             f"{str(e).splitlines()[0]}") from None
        if config.modules_to_save or config.use_dora:
            raise ValueError(f"{folder / ADAPTER_CONFIG}: modules_to_save and DoRA adapters are not supported")
        path = folder / ADAPTER_WEIGHTS
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"could not read {path}: {e} (truncated or corrupted file?)") from None
        bad = nonfinite_tensors(tensors)
        if bad:
            raise ValueError(f"{path}: non-finite adapter weights in {', '.join(bad[:3])}; refusing to load them")
        weights = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}
        source = str(name_or_path) if from_hub else str(folder)
        return cls(config, weights, record["base"], record.get("training"), source=source)

    def push_to_hub(self, repo_id: str, *, training: dict[str, Any] | None = None, commit_message: str | None = None,
                    private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                    create_pr: bool = False) -> Any:
        """Upload the adapter folder plus a model card naming its base pipeline (and its hash) to `repo_id`.
        `training`: facts added to the adapter's training record (a trainer's `--push_to_hub`)."""
        from huggingface_hub import ModelCardData

        from magvit2.hub import is_repo_id, push_folder

        if training:
            self.training = {**(self.training or {}), **training}
        base = self.base["name_or_path"]
        hub_base = base if is_repo_id(base) and "/" in base and not Path(base).exists() else None
        data = ModelCardData(library_name="magvit2-maskgit", base_model=hub_base,
                             tags=["lora", "peft", "text-to-video", "maskgit", "magvit2-maskgit"])
        lines = [f"# {repo_id.split('/')[-1]}", "",
                 f"A LoRA adapter for the text-to-video pipeline {base} (transformer sha256 "
                 f"{self.base['transformer_sha256'][:16]}...), trained with magvit2-maskgit.", "",
                 "```bash", "pip install 'magvit2-maskgit[lora]'", "```", "", "```python",
                 "from maskgit import TextToVideoPipeline", "",
                 f"pipe = TextToVideoPipeline.from_pretrained({base!r})  # the base it was trained on",
                 f"pipe.load_lora_weights({repo_id!r}, adapter_name=\"lora\", weight=1.0)",
                 "frames = pipe(\"a prompt\").frames[0]", "```", "", "## Adapter", "", "```json",
                 json.dumps(self.record()["adapter"], indent=2), "```", "", "## Training", ""]
        record = self.training or {}
        lines += [f"- {k}: {v}" for k, v in record.items()] if record else ["Not recorded with this adapter."]
        card = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
        return push_folder(self.save_pretrained, repo_id, card, commit_message=commit_message, private=private,
                           token=token, revision=revision, create_pr=create_pr)


def _check_base(base: Any, where: str) -> None:
    if (not isinstance(base, dict) or not isinstance(base.get("name_or_path"), str)
            or not isinstance(base.get("transformer_sha256"), str) or not _SHA256.match(base["transformer_sha256"])):
        raise ValueError(f"{where} must hold name_or_path (str) and transformer_sha256 (64 hex digits); got "
                         f"{base!r:.200}")

