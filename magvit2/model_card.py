"""Model cards (README.md) for every saved model and pipeline, with huggingface_hub's `ModelCard` + `ModelCardData`.

The card's metadata: license (default this package's, MIT; pass `license=` for weights under another one),
`library_name: magvit2-maskgit`, tags, `pipeline_tag`, `base_model` (Hub ids only: a pipeline's tokenizer when it
came from the Hub, the base of a fine-tune), `datasets` (Hub dataset ids), and the training record under
`magvit2_training`. The body: what the model is, the install line, how to load it, a sample (a GIF/MP4/PNG copied
into the folder), its components, config and training record.

`save_pretrained` writes the card into every folder (as huggingface_hub's `PyTorchModelHubMixin` does); a
README.md that this package did not write (no `CARD_MARKER`) is never replaced. `read_card` gives back the
metadata of a folder's card, so `from_pretrained` -> `push_to_hub` keeps the license, datasets, base model and
training record of the folder it loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from magvit2.hub import DEFAULT_LICENSE, LIBRARY_NAME, copy_sample, is_repo_id
from magvit2.serialization import atomic_write_text

CARD_NAME = "README.md"
CARD_MARKER = "<!-- written by magvit2-maskgit save_pretrained; delete this line to keep your edits -->"
TRAINING_KEY = "magvit2_training"
SAMPLE_SUFFIXES = (".gif", ".mp4", ".webp", ".png")
PAPERS = ("[MAGVIT-v2](https://arxiv.org/abs/2310.05737) (Yu et al., *Language Model Beats Diffusion: Tokenizer is "
          "Key to Visual Generation*) and [MaskGIT](https://arxiv.org/abs/2202.04200) (Chang et al.)")
logger = logging.getLogger(__name__)


@dataclass
class CardSpec:
    """What a model says about itself for its card (`PretrainedMixin.card_spec`)."""

    kind: str  # "video tokenizer", "MaskGit transformer", "text-to-video pipeline"
    import_line: str  # "from magvit2 import VideoTokenizer"
    class_name: str
    config: dict[str, Any]
    tags: list[str]
    pipeline_tag: str | None = None
    base_model: list[str] = field(default_factory=list)  # Hub ids this model derives from (known to the model)
    components: list[tuple[str, str]] = field(default_factory=list)  # (name, markdown description)
    install: str = "pip install magvit2-maskgit"
    usage: str = ""  # lines after the load line
    training: dict[str, Any] = field(default_factory=dict)  # what the model itself recorded


def _as_list(value: Any, what: str) -> list[str]:
    values = [value] if isinstance(value, str) else list(value or [])
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"model card {what} must be a str or a list of str; got {value!r:.80}")
    return values


def _hub_ids(values: list[str], what: str) -> list[str]:
    """Hub ids ('owner/name') only: a local path in card metadata would be wrong on the Hub."""
    bad = [v for v in values if not (is_repo_id(v) and "/" in v)]
    if bad:
        raise ValueError(f"model card {what} must be Hub ids 'owner/name'; got {bad}")
    return values


def build_card(model: Any, *, repo_id: str | None = None, training: dict[str, Any] | None = None,
               license: str | None = None, datasets: list[str] | str | None = None,
               base_model: list[str] | str | None = None, sample: str | None = None,
               folder_name: str | None = None) -> ModelCard:
    """The card of `model` (a `PretrainedMixin`): its `card_spec()`, what its loaded card said (`model.card_data`),
    then the given values, in increasing precedence. `sample`: a file name inside the saved folder."""
    spec = model.card_spec()
    previous = dict(model.card_data or {})
    record = {**(previous.get(TRAINING_KEY) or {}), **spec.training, **(training or {})}
    own = [b for b in (*spec.base_model, getattr(model, "base_model", None)) if b]
    bases = _hub_ids(_as_list(base_model, "base_model"), "base_model") if base_model is not None else \
        list(dict.fromkeys([*own, *_as_list(previous.get("base_model"), "base_model")]))
    data = ModelCardData(
        license=license or previous.get("license") or DEFAULT_LICENSE,
        library_name=LIBRARY_NAME,
        tags=sorted({LIBRARY_NAME, *spec.tags}),
        pipeline_tag=spec.pipeline_tag,
        base_model=bases or None,
        datasets=_hub_ids(_as_list(datasets, "datasets"), "datasets") if datasets is not None
        else previous.get("datasets"),
        **({TRAINING_KEY: _jsonable(record)} if record else {}),
    )
    name = repo_id or folder_name or "path/to/this/folder"
    title = (repo_id or folder_name or spec.class_name).split("/")[-1]
    lines = [CARD_MARKER, "", f"# {title}", "",
             f"A {spec.kind} of magvit2-maskgit, after {PAPERS}. Saved with `save_pretrained` (safetensors + "
             "JSON configs; no pickle).", ""]
    if sample:
        lines += [f"![sample]({sample})", ""]
    lines += ["## Use it", "", "```bash", spec.install, "```", "", "```python", spec.import_line, "",
              f"{_variable(spec.class_name)} = {spec.class_name}.from_pretrained({name!r})"
              + (f"\n{spec.usage}" if spec.usage else ""), "```", ""]
    if spec.components:
        lines += ["## Components", "", *[f"- **{k}**: {v}" for k, v in spec.components], ""]
    if bases:
        lines += ["## Base model", "", *[f"- [{b}](https://huggingface.co/{b})" for b in bases], ""]
    lines += ["## Config", "", "```json", json.dumps(spec.config, indent=2), "```", "", "## Training", ""]
    if record:
        lines += ["| key | value |", "|---|---|", *[f"| {k} | {_cell(v)} |" for k, v in record.items()], ""]
    else:
        lines += ["Not recorded with this model.", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _variable(class_name: str) -> str:
    return {"VideoTokenizer": "tokenizer", "MaskGitTransformer": "transformer",
            "TextToVideoPipeline": "pipe"}.get(class_name, "model")


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record, default=str))


def _cell(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (list, dict)) \
        else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def is_our_card(path: Path) -> bool:
    try:
        return CARD_MARKER in path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def write_card(model: Any, folder: Path, *, training: dict[str, Any] | None = None, repo_id: str | None = None,
               sample: str | Path | None = None, **card_kwargs: Any) -> Path | None:
    """Write `folder/README.md` (atomically) unless a README.md this package did not write is there. The sample is
    `sample`, else the one the model was loaded with (copied in as `sample.<ext>`)."""
    path = folder / CARD_NAME
    if path.exists() and not is_our_card(path):
        logger.info("%s was not written by magvit2-maskgit; keeping it (no model card written)", path)
        return None
    source = sample if sample is not None else model.card_sample
    name = None
    if source is not None:
        if Path(source).suffix.lower() not in SAMPLE_SUFFIXES:
            raise ValueError(f"model card sample {source} must be one of {list(SAMPLE_SUFFIXES)}")
        name = copy_sample(source, folder)
    card = build_card(model, repo_id=repo_id, training=training, sample=name,
                      folder_name=None if repo_id else folder.name, **card_kwargs)
    return atomic_write_text(path, str(card))


def read_card(folder: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """(metadata of `folder`'s card written by this package, its sample file) or (None, None). A card that does not
    parse is ignored with a warning (it is only metadata)."""
    path = folder / CARD_NAME
    if not path.is_file() or not is_our_card(path):
        return None, None
    try:
        data = ModelCard.load(path).data.to_dict()
    except Exception as e:  # a broken card must not stop a model from loading
        logger.warning("%s: model card metadata not readable (%s); ignoring it", path, e)
        return None, None
    samples = [folder / f"sample{s}" for s in SAMPLE_SUFFIXES if (folder / f"sample{s}").is_file()]
    return data, samples[0] if samples else None
