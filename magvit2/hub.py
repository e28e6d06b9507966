"""The Hugging Face Hub, the one home for it: a repo id -> a local snapshot (`download_snapshot`), and
`PretrainedMixin`, huggingface_hub's `ModelHubMixin` extended once for every model and pipeline of this package.

Downloads go through `huggingface_hub.snapshot_download` into its cache (`HF_HUB_CACHE` / `HF_HOME`, read when
called). The cache is tried first, without the network; `HF_HUB_OFFLINE=1` (or `local_files_only=True`) stops
there. A repo that cannot be had fails with one line naming the id (no retries beyond huggingface_hub's one
request with `etag_timeout`). Files in the cache are symlinks into the repo's `blobs/`; every link is checked to stay
inside that repo's cache folder.

Why `ModelHubMixin` is extended (here, once) rather than used as is: its `from_pretrained` downloads one flat
`config.json` and feeds its keys to `__init__`, and its `save_pretrained` writes that config; ours are strict (a
`_kind` and a format version, unknown keys refused, safetensors only, `magvit2.serialization`), may sit in a run
folder or a pipeline subfolder (`magvit2.model_paths`), and take `torch_dtype=` / `device=`. What the mixin keeps
doing: `push_to_hub` (create the repo, save into a temporary folder, upload it in one commit), the class-level card
metadata (library name, license, tags, repo url), and `generate_model_card` (here: `magvit2.model_card`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelCard, ModelHubMixin

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_TRUE = ("1", "on", "yes", "true")
LIBRARY_NAME = "magvit2-maskgit"
DEFAULT_LICENSE = "mit"  # this package's license; pass license= for weights under another one
logger = logging.getLogger(__name__)


class HubModelNotFoundError(FileNotFoundError):
    """Neither a local folder nor a Hub repo that could be had (offline, not cached, unknown, or no access)."""


def is_repo_id(name: str) -> bool:
    """'owner/name' or 'name' as the Hub spells repo ids (not a path: no leading '.', '/', '~', no '..')."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def download_snapshot(repo_id: str, *, subfolder: str | None = None, revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                      local_files_only: bool | None = None, force_download: bool = False) -> Path:
    """The local snapshot folder of Hub repo `repo_id` (only `subfolder/` of it when given): the cache first, then
    (unless offline) one download. HubModelNotFoundError (a FileNotFoundError) names the id when it cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    cache = _cache_dir(cache_dir)
    offline = hub_offline() if local_files_only is None else bool(local_files_only)
    patterns = None if subfolder is None else [f"{subfolder.strip('/')}/*", f"{subfolder.strip('/')}/**"]
    kwargs: dict[str, Any] = dict(revision=revision, cache_dir=cache, allow_patterns=patterns)
    folder = None
    if not force_download:
        try:
            folder = Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError):
            folder = None
    if folder is None:
        if offline:
            raise HubModelNotFoundError(
                f"{repo_id!r} is not a local folder, and the Hugging Face Hub repo is not in the cache "
                f"({cache or 'the default cache'}) while offline (HF_HUB_OFFLINE=1 or local_files_only): download "
                f"it first (hf download {repo_id}) or pass a local folder") from None
        try:
            folder = Path(snapshot_download(repo_id, token=token, etag_timeout=10, force_download=force_download,
                                            **kwargs))
        except (RepositoryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise HubModelNotFoundError(f"{repo_id!r} is not a local folder, and the Hugging Face Hub repo could "
                                        f"not be downloaded: {reason}") from None
    check_snapshot_links(folder)
    return folder


def check_snapshot_links(folder: Path) -> None:
    """Every symlink under a cache snapshot must resolve inside the repo's cache folder (snapshots/<rev>/../..)."""
    root = folder.resolve().parent.parent
    for path in folder.rglob("*"):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ValueError(f"{path} in the Hub cache links out of the repo's cache folder (to {path.resolve()}); "
                             "refusing to load it")


# --------------------------------------------------------------------------------------------------------------
# torch_dtype / device keywords

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def parse_dtype(dtype: torch.dtype | str | None, where: str = "torch_dtype") -> torch.dtype | str | None:
    """None, "auto" (the stored weights' dtype), a floating torch.dtype, or its name ("bfloat16", "bf16", "fp16",
    "float32", ...) -> a torch.dtype (or "auto" / None)."""
    if dtype is None or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.").lower()
        if name not in _DTYPES:
            raise ValueError(f"{where} must be a floating torch dtype or one of {sorted(_DTYPES)} / 'auto'; got "
                             f"{dtype!r}")
        return _DTYPES[name]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{where} must be a floating torch dtype (torch.float32, torch.bfloat16, torch.float16); "
                         f"got {dtype!r}")
    return dtype


def push_folder(save: Callable[[Path], Any], repo_id: str, card: str, *, commit_message: str | None = None,
                private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                create_pr: bool = False) -> Any:
    """For what is not a `PretrainedMixin` model (a LoRA adapter): `save(folder)` into a temporary folder, add the
    model card as README.md, create the repo if needed and upload the folder in one commit (CommitInfo)."""
    if not is_repo_id(repo_id) or "/" not in repo_id:
        raise ValueError(f"push_to_hub needs a repo id 'owner/name'; got {repo_id!r}")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="magvit2-push-") as tmp:
        folder = Path(tmp) / "model"
        save(folder)
        (folder / "README.md").write_text(card, encoding="utf-8")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or "Upload with magvit2-maskgit push_to_hub")


# --------------------------------------------------------------------------------------------------------------
# the mixin


class PretrainedMixin(ModelHubMixin, library_name=LIBRARY_NAME, license=DEFAULT_LICENSE,
                      repo_url="https://arxiv.org/abs/2310.05737", tags=["magvit2-maskgit"]):
    """`from_pretrained` / `save_pretrained` / `push_to_hub` for `VideoTokenizer`, `MaskGitTransformer` and
    `TextToVideoPipeline` (see the module docstring for what differs from `ModelHubMixin`).

    A subclass sets `model_kind` (a `magvit2.model_paths.ModelKind`) and implements
    `_save_pretrained(folder, training)`, `_load_pretrained(folder, **kwargs)` (a classmethod; weights on the CPU as
    stored) and `card_spec()` (a `magvit2.model_card.CardSpec`).

    After `from_pretrained`, `name_or_path` is what was passed, `hub_repo_id` the Hub repo it came from (or None),
    and `card_data` the metadata of the folder's model card (license, datasets, base model, training record), which
    later `save_pretrained` / `push_to_hub` calls keep unless given new values. `base_model`: the Hub id a trainer
    fine-tuned this model from (its card's `base_model`).
    """

    model_kind: ClassVar[Any]
    name_or_path: str | None = None
    hub_repo_id: str | None = None
    base_model: str | None = None  # the Hub model this one was fine-tuned from (set by the trainers' --init-from)
    card_data: dict[str, Any] | None = None
    card_sample: Path | None = None

    # loading ----------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, subfolder: str | None = None,
                        torch_dtype: torch.dtype | str | None = None, device: torch.device | str | None = None,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None, local_files_only: bool | None = None,
                        force_download: bool = False, **kwargs: Any) -> Any:
        """Load from a `save_pretrained` folder, a training run folder (its export), a pipeline folder or Hub repo
        holding one (`subfolder=`, or found at its usual place), or a Hub repo id (cache first; `revision=`,
        `cache_dir=`, `token=`, `local_files_only=`, `force_download=`): the rule of `magvit2.model_paths`.
        torch_dtype: cast after loading (`torch.bfloat16`, "bf16", "auto" = as stored); device: move there."""
        from magvit2.model_card import read_card
        from magvit2.model_paths import resolve_model_path

        dtype = parse_dtype(torch_dtype)
        location = resolve_model_path(pretrained_model_name_or_path, cls.model_kind, subfolder=subfolder,
                                      revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=local_files_only, force_download=force_download)
        model = cls._load_pretrained(location.folder, from_hub=location.repo_id is not None, device=device,
                                     **kwargs)
        model.name_or_path = str(pretrained_model_name_or_path)
        model.hub_repo_id = location.repo_id
        model.card_data, model.card_sample = read_card(location.folder)
        if dtype == "auto":
            dtype = model.stored_dtype(location.folder)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model

    @classmethod
    def _load_pretrained(cls, folder: Path, *, from_hub: bool, device: torch.device | str | None, **kwargs: Any
                         ) -> Any:
        raise NotImplementedError

    @staticmethod
    def stored_dtype(folder: Path) -> torch.dtype:
        """The dtype of the floating weights stored in `folder` (for torch_dtype="auto")."""
        from magvit2.serialization import stored_dtype

        return stored_dtype(folder)

    # saving -----------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, training: dict[str, Any] | None = None, *,
                        config: Any = None, repo_id: str | None = None, push_to_hub: bool = False,
                        model_card_kwargs: dict[str, Any] | None = None, **push_to_hub_kwargs: Any) -> Path:
        """Write the model's folder (config + safetensors, atomically) and its model card (README.md; kept if the
        folder already has a README.md this package did not write). `training`: the training record (the
        tokenizer also keeps its num_frames / frame_stride / step in config.json). `model_card_kwargs`: license,
        datasets, base_model, sample (a GIF/MP4/PNG copied in as the card's sample), repo_id. With
        `push_to_hub=True` the folder is then uploaded (`push_to_hub(repo_id, ...)`). Returns the folder."""
        from magvit2.model_card import write_card

        if config is not None:
            raise ValueError("config= cannot replace a model's own config at save time; build the model with it")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        card_kwargs = dict(model_card_kwargs or {})
        training = {**(card_kwargs.pop("training", None) or {}), **(training or {})} or None
        self._save_pretrained(folder, training)
        card_kwargs.setdefault("repo_id", repo_id)
        write_card(self, folder, training=training, **card_kwargs)
        if push_to_hub:
            self.push_to_hub(repo_id or folder.name, training=training, model_card_kwargs=model_card_kwargs,
                             **push_to_hub_kwargs)
        return folder

    def _save_pretrained(self, save_directory: Path, training: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def push_to_hub(self, repo_id: str, *, training: dict[str, Any] | None = None, revision: str | None = None,
                    license: str | None = None, datasets: list[str] | str | None = None,
                    base_model: list[str] | str | None = None, sample: str | os.PathLike | None = None,
                    model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Upload `save_pretrained`'s folder with its model card to the Hub repo `repo_id` ('owner/name'; created if
        needed) in one commit (huggingface_hub's `ModelHubMixin.push_to_hub`: `commit_message=`, `private=`,
        `token=`, `branch=` (or `revision=`), `create_pr=`, `allow_patterns=`, ...). The card gets `license`
        (default: this package's, MIT), `datasets` and `base_model` (Hub ids), the `training` record and a
        `sample` video/GIF. Returns huggingface_hub's CommitInfo."""
        if not is_repo_id(repo_id) or "/" not in repo_id:
            raise ValueError(f"push_to_hub needs a repo id 'owner/name'; got {repo_id!r}")
        card = {**(model_card_kwargs or {}), "repo_id": repo_id}
        for key, value in (("training", training), ("license", license), ("datasets", datasets),
                           ("base_model", base_model), ("sample", sample)):
            if value is not None:
                card[key] = value
        if revision is not None:
            kwargs.setdefault("branch", revision)
        kwargs.setdefault("commit_message", "Upload with magvit2-maskgit push_to_hub")
        return super().push_to_hub(repo_id, model_card_kwargs=card, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card `save_pretrained` writes (`magvit2.model_card.build_card`)."""
        from magvit2.model_card import build_card

        return build_card(self, **kwargs)


def copy_sample(sample: str | os.PathLike, folder: Path) -> str:
    """Copy a sample video/GIF/image into `folder` as `sample.<ext>` (for the model card); returns the file name."""
    sample = Path(sample)
    if not sample.is_file():
        raise FileNotFoundError(f"model card sample {sample} is not a file")
    name = f"sample{sample.suffix.lower()}"
    dest = folder / name
    if not (dest.exists() and dest.samefile(sample)):
        from magvit2.serialization import atomic_write

        with atomic_write(dest) as tmp:
            shutil.copyfile(sample, tmp)
    return name
