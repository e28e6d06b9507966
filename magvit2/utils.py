"""Helpers users of diffusers look for under `utils`: `export_to_video` (diffusers.utils' signature) writes a
pipeline's output to an mp4 or GIF. Also `from maskgit import export_to_video`."""

from __future__ import annotations

from typing import Any


def export_to_video(video_frames: Any, output_video_path: str | None = None, fps: float = 10,
                    lossless: bool = False) -> str:
    """See `magvit2.video_write.export_to_video` (imported on first use: PyAV is loaded only then)."""
    from magvit2.video_write import export_to_video as export

    return export(video_frames, output_video_path, fps=fps, lossless=lossless)


__all__ = ["export_to_video"]
