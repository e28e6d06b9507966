"""`export_to_video` (diffusers' signature; `maskgit.export_to_video` and `magvit2.utils.export_to_video`) and
`write_video` on every frame form a pipeline gives: np float [0, 1], uint8, PIL lists, torch tensors. Written
lossless and read back, every form of the same video gives the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magvit2.pixels import from_uint8, to_uint8
from magvit2.utils import export_to_video as utils_export
from maskgit import export_to_video
from tests.helpers.media import pan_frames
from trainers.data.video_io import read_video
from trainers.data.video_write import write_video


def test_every_frame_form_writes_the_same_video(tmp_path):
    frames = pan_frames(5, (16, 24))  # uint8 (5, 16, 24, 3), a real photo pan
    as_float = frames.astype(np.float32) / 255.0  # diffusers' "np": float in [0, 1]
    forms = {
        "uint8": frames,
        "float01": as_float,
        "float64": as_float.astype(np.float64),
        "list_of_float": list(as_float),
        "list_of_uint8": list(frames),
        "pil": [Image.fromarray(f) for f in frames],
        "tensor": from_uint8(frames),  # (3, t, h, w) in [-1, 1]: this package's "pt"
        "uint8_tensor": torch.from_numpy(frames),
        "gray": frames[..., 0],
    }
    for name, video in forms.items():
        path = export_to_video(video, str(tmp_path / f"{name}.mp4"), fps=8, lossless=True)
        assert path == str(tmp_path / f"{name}.mp4")
        back = read_video(path)
        want = np.repeat(frames[..., :1], 3, -1) if name == "gray" else frames
        assert back.shape == want.shape, name
        assert np.abs(back.astype(int) - want.astype(int)).max() <= 2, name  # yuv444 rounding only
    # the pipeline's np output and its pt output give identical bytes (rounding, not diffusers' truncation)
    video = from_uint8(frames)
    np_form = ((video + 1) / 2).permute(1, 2, 3, 0).numpy()
    a = write_video(tmp_path / "np.mp4", np_form, lossless=True)
    b = write_video(tmp_path / "pt.mp4", video, lossless=True)
    assert np.array_equal(read_video(a), read_video(b))


def test_pipeline_output_exports_like_diffusers(tmp_path):
    from tests.helpers.models import build_pipeline, gen

    pipe = build_pipeline()
    frames = pipe("a red ball", generator=gen(0)).frames[0]  # float (5, 16, 16, 3) in [0, 1]
    path = export_to_video(frames, str(tmp_path / "out.mp4"))  # diffusers' call, default fps 10
    assert read_video(path).shape == (5, 16, 16, 3)
    gif = utils_export(pipe("a red ball", generator=gen(0), output_type="pil").frames[0], str(tmp_path / "o.gif"),
                       fps=5)
    assert read_video(gif).shape == (5, 16, 16, 3)
    tmp = export_to_video(frames)  # no path: a new temporary .mp4, as diffusers does
    try:
        assert tmp.endswith(".mp4") and read_video(tmp).shape == (5, 16, 16, 3)
    finally:
        Path(tmp).unlink()
    pt = pipe("a red ball", generator=gen(0), output_type="pt").frames
    export_to_video(pt[0], str(tmp_path / "pt.mp4"), lossless=True)
    assert np.abs(read_video(tmp_path / "pt.mp4").astype(int) - to_uint8(pt[0]).astype(int)).max() <= 2


def test_bad_frames_are_clear_errors(tmp_path):
    frames = pan_frames(3, (8, 8)).astype(np.float32) / 255
    with pytest.raises(ValueError, match=r"float frames must lie in \[0, 1\].*\(a \[-1, 1\] video\?"):
        write_video(tmp_path / "a.mp4", frames * 2 - 1)
    with pytest.raises(ValueError, match=r"a batch of videos\? pass one, e\.g\. frames\[0\]"):
        export_to_video(frames[None], str(tmp_path / "b.mp4"))
    with pytest.raises(ValueError, match=r"a batch\? pass one video"):
        export_to_video(torch.zeros(1, 3, 3, 8, 8), str(tmp_path / "c.mp4"))
    with pytest.raises(ValueError, match="empty list"):
        export_to_video([], str(tmp_path / "d.mp4"))
    with pytest.raises(ValueError, match="dtype int64"):
        write_video(tmp_path / "e.mp4", np.zeros((2, 8, 8, 3), dtype=np.int64))
    assert not list(tmp_path.iterdir())  # nothing half-written
