"""A folder of captioned clips in the project's dataset format (lossless mp4 files + ``metadata.jsonl``), written
in parallel: shared by the demo's digit (``digits.py``) and photo (``photos.py``) datasets."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trainers.data.video_write import write_video


def write_clip_folder(
    folder: str | os.PathLike, clips: Iterable[tuple[str, np.ndarray, dict]], fps: int = 8, workers: int = 4
) -> int:
    """Write ``(file_name, frames uint8 (T, H, W, 3), record)`` items as lossless mp4 files plus
    ``metadata.jsonl`` (one ``record`` per line, in item order, ``file_name`` first). Encoding runs in ``workers``
    threads (PyAV releases the GIL) while the caller's generator renders the next clips. Returns the clip count."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for file_name, frames, record in clips:
            path = folder / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            pending.append(pool.submit(write_video, path, frames, fps=fps, lossless=True))
            lines.append(json.dumps({"file_name": file_name, **record}))
            while len(pending) > 4 * max(1, workers):  # bounded memory; re-raises a failed write
                pending.popleft().result()
        for future in pending:
            future.result()
    tmp = folder / "metadata.jsonl.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, folder / "metadata.jsonl")
    return len(lines)
