"""Packed shards at a URL or behind a command: fetched once into a local cache, then read like a packed folder.

A source is the packed folder (`magvit2-pack`) given as `https://HOST/PATH/`, `http://...` or `file:///PATH/`, or as
`pipe:COMMAND`, where COMMAND holds `{file}` and writes that file of the packed folder to stdout, e.g.
`pipe:aws s3 cp s3://bucket/clips/{file} -` or `pipe:curl -s https://host/clips/{file}`.

`fetch_shards(source)` downloads `shards.json`, checks it (`trainers.data.shards.read_manifest`: shard names are plain
file names, so nothing lands outside the cache), then every shard it lists that is not cached yet, each written
atomically, into `MAGVIT2_SHARD_CACHE` (default `~/.cache/magvit2/shards`) / `<sha256(source)[:16]>/`, and returns
that folder. A restart downloads only what is missing. Random access needs the bytes on a local disk: shards are
fetched whole before training reads them, not streamed. Trainers call it through `trainers.rank_zero.on_local_main`:
one process per machine downloads while the others of that machine wait for it (no collective), then they all agree
on the outcome (`same_outcome`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from magvit2.serialization import atomic_write

__all__ = ["fetch_shards", "is_remote", "shard_cache"]

_SCHEMES = ("http://", "https://", "file://", "pipe:")


def is_remote(source: str | os.PathLike) -> bool:
    """True for a URL or `pipe:` source (anything else is a local path)."""
    return isinstance(source, str) and source.startswith(_SCHEMES)


def shard_cache() -> Path:
    return Path(os.environ.get("MAGVIT2_SHARD_CACHE", Path.home() / ".cache" / "magvit2" / "shards")).expanduser()


def _fetch(source: str, name: str, dest: Path, timeout: float) -> None:
    """`name` of the packed folder at `source` -> `dest` (atomically); ValueError naming the source on failure."""
    with atomic_write(dest) as tmp, open(tmp, "wb") as out:
        if source.startswith("pipe:"):
            command = source[len("pipe:"):].replace("{file}", name)
            proc = subprocess.run(command, shell=True, stdout=out, stderr=subprocess.PIPE, timeout=timeout)
            if proc.returncode:
                why = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                raise ValueError(f"{source}: `{command}` failed with exit code {proc.returncode}: {why[0]}")
            return
        url = source.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out, length=1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ValueError(f"cannot fetch {url}: {getattr(e, 'reason', e)}") from None


def fetch_shards(source: str, cache: str | os.PathLike | None = None, timeout: float = 600.0) -> Path:
    """The local copy of the packed folder at `source` (see the module docstring): `shards.json` fetched again, every
    listed shard fetched when missing. Returns the cache folder, which `ShardDataset` reads."""
    from trainers.data.shards import SHARDS_FILE, read_manifest

    if not is_remote(source):
        raise ValueError(f"expected a URL (http://, https://, file://) or a pipe: spec; got {source!r}")
    if source.startswith("pipe:") and "{file}" not in source:
        raise ValueError(f"{source}: a pipe: spec names each file with {{file}}, e.g. pipe:cat /data/clips/{{file}}")
    folder = Path(cache or shard_cache()) / hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SOURCE.txt").write_text(source + "\n", encoding="utf-8")
    _fetch(source, SHARDS_FILE, folder / SHARDS_FILE, timeout)
    for shard in read_manifest(folder)["shards"]:  # plain names only: checked by read_manifest
        if not (folder / shard["file"]).is_file():
            _fetch(source, shard["file"], folder / shard["file"], timeout)
    return folder
