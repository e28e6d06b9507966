"""The Hugging Face Hub, the one home for it: `from_pretrained` of a Hub repo id (a local folder always wins), and
`push_to_hub` with a generated model card. Used by `VideoTokenizer`, `maskgit.MaskGitTransformer` and
`maskgit.TextToVideoPipeline`.

Downloads go through `huggingface_hub.snapshot_download` into its cache (`HF_HUB_CACHE` / `HF_HOME`, read when
called). The cache is tried first, without the network; `HF_HUB_OFFLINE=1` (or `local_files_only=True`) stops
there. A repo that cannot be had fails with one line naming the id (no retries beyond huggingface_hub's one
request with `etag_timeout`). Files in the cache are symlinks into the repo's `blobs/`; `resolve_pretrained` checks
that every link stays inside that repo's cache folder.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_TRUE = ("1", "on", "yes", "true")


class HubModelNotFoundError(FileNotFoundError):
    """Neither a local folder nor a Hub repo that could be had (offline, not cached, unknown, or no access)."""


def is_repo_id(name: str) -> bool:
    """'owner/name' or 'name' as the Hub spells repo ids (not a path: no leading '.', '/', '~', no '..')."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def resolve_pretrained(name_or_path: str | os.PathLike, *, revision: str | None = None,
                       cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                       local_files_only: bool | None = None, subfolder: str | None = None) -> tuple[Path, bool]:
    """-> (a local folder, whether it came from the Hub). A path that exists is used as is; otherwise a repo id is
    fetched (cache first). HubModelNotFoundError (a FileNotFoundError) names the id when it cannot be had."""
    path = Path(name_or_path).expanduser()
    if path.exists() or not is_repo_id(str(name_or_path)):
        return path, False
    repo_id = str(name_or_path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    cache = _cache_dir(cache_dir)
    offline = _offline() if local_files_only is None else bool(local_files_only)
    patterns = None if subfolder is None else [f"{subfolder}/*", f"{subfolder}/**"]
    kwargs: dict[str, Any] = dict(revision=revision, cache_dir=cache, allow_patterns=patterns)
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        if offline:
            raise HubModelNotFoundError(
                f"{repo_id!r} is not a local folder, and the Hugging Face Hub repo is not in the cache "
                f"({cache or 'the default cache'}) while offline (HF_HUB_OFFLINE=1 or local_files_only): download "
                f"it first (huggingface-cli download {repo_id}) or pass a local folder") from None
        try:
            folder = Path(snapshot_download(repo_id, token=token, etag_timeout=10, **kwargs))
        except (RepositoryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise HubModelNotFoundError(f"{repo_id!r} is not a local folder, and the Hugging Face Hub repo could "
                                        f"not be downloaded: {reason}") from None
    check_snapshot_links(folder)
    return (folder / subfolder if subfolder else folder), True


def check_snapshot_links(folder: Path) -> None:
    """Every symlink under a cache snapshot must resolve inside the repo's cache folder (snapshots/<rev>/../..)."""
    root = folder.resolve().parent.parent
    for path in folder.rglob("*"):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ValueError(f"{path} in the Hub cache links out of the repo's cache folder (to {path.resolve()}); "
                             "refusing to load it")


# --------------------------------------------------------------------------------------------------------------
# push_to_hub and the model card


def model_card(kind: str, repo_id: str, config: dict[str, Any], *, load: str, tags: list[str],
               training: dict[str, Any] | None = None, pipeline_tag: str | None = None,
               base_model: str | None = None) -> str:
    """README.md for a model repo: YAML metadata, how to load it, its config, and what is known of its training.
    `base_model`: the Hub repo this model adapts (an adapter's base), in the metadata the Hub links."""
    meta = ["---", "library_name: magvit2-maskgit", "tags:", *[f"- {t}" for t in tags]]
    if pipeline_tag:
        meta.append(f"pipeline_tag: {pipeline_tag}")
    if base_model:
        meta.append(f"base_model: {base_model}")
    meta.append("---")
    lines = [*meta, "", f"# {repo_id.split('/')[-1]}", "",
             f"A {kind} of [magvit2-maskgit](https://arxiv.org/abs/2310.05737) (MagViT2 video tokenizer + "
             "text-conditioned MaskGit), saved with `save_pretrained` (safetensors + JSON; no pickle).", "",
             "```python", load, "```", "", "## Config", "", "```json", json.dumps(config, indent=2), "```", ""]
    if training:
        lines += ["## Training", "", "| key | value |", "|---|---|",
                  *[f"| {k} | {_cell(v)} |" for k, v in training.items()], ""]
    else:
        lines += ["## Training", "", "Not recorded with this model.", ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (list, dict)) \
        else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def push_folder(save: Callable[[Path], Any], repo_id: str, card: str, *, commit_message: str | None = None,
                private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                create_pr: bool = False) -> Any:
    """`save(folder)` into a temporary folder, add the model card as README.md, create the repo if needed and
    upload the folder in one commit. Returns huggingface_hub's CommitInfo."""
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
