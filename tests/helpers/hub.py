"""huggingface_hub's cache layout, built offline from a saved folder (never the network)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """`folder`'s files as huggingface_hub's cache holds them: blobs/ + snapshots/<commit>/ links + refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            blob = repo / "blobs" / f"{abs(hash(str(path.relative_to(folder)))):x}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot
