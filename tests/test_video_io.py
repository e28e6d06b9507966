"""PyAV/Pillow video I/O: round trips, exact frame counts, probing, decoder resizing, atomic writes."""

from __future__ import annotations

import re
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from magvit2.pixels import from_uint8, to_uint8
from trainers.data import video_io as vio


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _write_with_av(path, frames, codec, fmt=None, rate=8):
    """Write with a codec write_video does not offer (mpeg4 avi, vp9 webm, mpeg1 mpg)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=Fraction(rate))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))


def test_lossless_mp4_round_trip_exact_count_and_psnr(tmp_path, pan):
    frames = pan(20, (48, 64))
    path = vio.write_video(tmp_path / "a.mp4", frames, fps=8, lossless=True)
    back = vio.read_video(path)
    assert back.shape == (20, 48, 64, 3) and back.dtype == np.uint8
    assert _psnr(back, frames) > 40
    assert vio.probe_video(path) == vio.VideoInfo(num_frames=20, height=48, width=64, fps=8.0)


def test_default_mp4_pads_odd_sizes_to_even(tmp_path, pan):
    frames = pan(6, (47, 63))
    back = vio.read_video(vio.write_video(tmp_path / "odd.mp4", frames))
    assert back.shape == (6, 48, 64, 3)
    assert _psnr(back[:, :47, :63], frames) > 30


@pytest.mark.parametrize(("name", "codec", "fmt", "rate"), [
    ("a.mkv", None, None, 8), ("a.mov", None, None, 8), ("a.avi", "mpeg4", None, 8),
    ("a.webm", "libvpx-vp9", None, 8), ("a.mpg", "mpeg1video", "mpeg", 25),
])
def test_probe_and_read_counts_across_containers(tmp_path, name, codec, fmt, rate, pan):
    frames = pan(12, (32, 48))
    path = tmp_path / name
    if codec is None:
        vio.write_video(path, frames, fps=rate)
    else:
        _write_with_av(path, frames, codec, fmt, rate)
    info = vio.probe_video(path)
    assert (info.num_frames, info.height, info.width) == (12, 32, 48)
    assert info.fps == pytest.approx(rate)
    assert vio.read_video(path).shape == (12, 32, 48, 3)


def test_reads_real_gif_like_pillow(skimage_gif):
    info = vio.probe_video(skimage_gif)
    assert (info.num_frames, info.height, info.width) == (24, 25, 14)
    ours = vio.read_video(skimage_gif)
    with Image.open(skimage_gif) as im:
        pillow = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    np.testing.assert_array_equal(ours, pillow)


def test_write_gif_keeps_every_frame_including_repeats(tmp_path, pan):
    frames = pan(6, (40, 40))
    frames = np.concatenate([frames[:2], frames[1:2], frames[1:2], frames[2:]])  # two repeated frames: 8 in all
    path = vio.write_gif(tmp_path / "a.gif", frames, fps=8)
    back = vio.read_video(path)
    assert back.shape == (8, 40, 40, 3)
    assert _psnr(back, frames) > 28
    assert vio.probe_video(path).num_frames == 8
    with Image.open(path) as im:
        assert im.n_frames == 8 and im.info.get("loop") == 0


def test_resize_in_decoder_start_stride_and_early_stop(tmp_path, pan):
    path = vio.write_video(tmp_path / "a.mp4", pan(20), lossless=True)
    full = vio.read_video(path)
    part = vio.read_video(path, start=2, num_frames=4, stride=3)
    np.testing.assert_array_equal(part, full[[2, 5, 8, 11]])
    assert vio.read_video(path, size=(24, 40), num_frames=3).shape == (3, 24, 40, 3)
    with pytest.raises(vio.VideoReadError, match="needs 22 frames"):
        vio.read_video(path, start=1, num_frames=11, stride=2)


def test_cover_size_crop_and_read_clip(tmp_path, pan):
    assert vio.cover_size((48, 64), (32, 32)) == (32, 43)
    assert vio.cover_size((64, 48), (16, 32)) == (43, 32)
    assert vio.crop_offsets((32, 43), (32, 32)) == (0, 5)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        top, left = vio.crop_offsets((40, 50), (32, 32), gen)
        assert 0 <= top <= 8 and 0 <= left <= 18
    path = vio.write_video(tmp_path / "a.mp4", pan(9), lossless=True)
    assert vio.read_clip(path, (24, 24), start=0, num_frames=5, stride=2).shape == (5, 24, 24, 3)
    png = tmp_path / "a.png"
    Image.fromarray(pan(1, (30, 50))[0]).save(png)
    assert vio.read_clip(png, (16, 16), num_frames=5).shape == (1, 16, 16, 3)
    assert vio.read_image(png).shape == (1, 30, 50, 3)
    assert vio.probe_image(png) == vio.VideoInfo(1, 30, 50, 0.0)


def test_corrupt_and_missing_files_raise_clear_errors(tmp_path, skimage_gif):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.gif"
    text.write_text("this is not a gif\n" * 4)
    truncated = tmp_path / "cut.gif"
    truncated.write_bytes(skimage_gif.read_bytes()[:40])
    for path in (empty, text, truncated):
        with pytest.raises(vio.VideoReadError, match=re.escape(path.name)):
            vio.probe_video(path)
    with pytest.raises(vio.VideoReadError, match=r"empty\.mp4"):
        vio.read_video(empty)
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        vio.probe_video(tmp_path / "missing.mp4")
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG not really")
    with pytest.raises(vio.VideoReadError, match=r"bad\.png"):
        vio.probe_image(bad_png)


def test_uint8_tensor_conversions_round_trip_exactly(pan):
    frames = pan(3, (8, 10))
    video = from_uint8(frames)
    assert video.shape == (3, 3, 8, 10) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    np.testing.assert_array_equal(to_uint8(video), frames)
    assert to_uint8(video[None]).shape == (1, 3, 8, 10, 3)
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.5, float("nan")]).view(1, 1, 1, 6).expand(3, 1, 1, 6)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]  # clamped, rounded (not truncated)
    with pytest.raises(ValueError, match="float tensor"):
        to_uint8(torch.zeros(3, 8, 8))


def test_write_accepts_float_tensor_and_is_atomic(tmp_path, monkeypatch, pan):
    video = from_uint8(pan(5, (16, 16)))  # (3, 5, 16, 16) in [-1, 1]
    path = vio.write_video(tmp_path / "t.mp4", video, lossless=True)
    assert vio.read_video(path).shape == (5, 16, 16, 3)
    vio.write_gif(tmp_path / "t.gif", video)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gif", "t.mp4"]  # no *.tmp-* left behind

    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise RuntimeError("encoder died")

    monkeypatch.setattr(vio.av.VideoFrame, "from_ndarray", explode)
    with pytest.raises(RuntimeError, match="encoder died"):
        vio.write_video(path, pan(5, (16, 16)))
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gif", "t.mp4"]
    with pytest.raises(ValueError, match="supported extensions"):
        vio.write_video(tmp_path / "x.avi", pan(2, (16, 16)))


def test_save_image_grid_layout(tmp_path, pan):
    images = from_uint8(pan(5, (10, 12))).transpose(0, 1)  # (5, 3, 10, 12) in [-1, 1]
    path = vio.save_image_grid(tmp_path / "grid.png", images, nrow=3, padding=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 12 + 2, 3 * 14 + 2, 3)
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()  # separators
    np.testing.assert_array_equal(grid[2:12, 2:14], to_uint8(images[:1].unsqueeze(2))[0, 0])
