"""Seeking decode (keyframe seek, then decode forward) gives exactly the frames of decode-from-0."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from trainers.data import video_io as vio


def _write_small_gop(path, frames, codec="libx264", fmt=None, rate=Fraction(8), gop=4, bframes=True):
    """A real-codec clip with a keyframe every `gop` frames (so a seek has several keyframes to choose from)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.gop_size = gop
        if codec == "libx264":
            s.options = {"g": str(gop), "keyint_min": str(gop), "bf": "2" if bframes else "0", "sc_threshold": "0"}
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    return path


def _keyframes(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.is_keyframe)


@pytest.mark.parametrize(("name", "codec", "fmt", "rate"), [
    ("a.mp4", "libx264", None, Fraction(8)), ("b.mp4", "libx264", None, Fraction(30000, 1001)),
    ("c.mkv", "libx264", None, Fraction(24)), ("d.webm", "libvpx-vp9", None, Fraction(8)),
    ("e.avi", "mpeg4", None, Fraction(8)), ("f.mpg", "mpeg1video", "mpeg", Fraction(25)),
])
def test_seek_decode_equals_decode_from_zero(tmp_path, pan, name, codec, fmt, rate, monkeypatch):
    frames = pan(30, (32, 48))
    path = _write_small_gop(tmp_path / name, frames, codec, fmt, rate)
    assert _keyframes(path) >= 4, "the test clip needs several keyframes"
    every = vio.read_video(path)  # start=0: plain decode from frame 0
    assert every.shape[0] == 30
    seeks = []
    real = vio._read_after_seek
    monkeypatch.setattr(vio, "_read_after_seek", lambda *a: seeks.append(out := real(*a)) or out)
    for start, n, stride in [(1, 3, 1), (5, 4, 1), (8, 5, 2), (13, 17, 1), (22, 4, 2), (29, 1, 1), (12, None, 1)]:
        got = vio.read_video(path, start=start, num_frames=n, stride=stride)
        want = every[start::stride][:n]
        np.testing.assert_array_equal(got, want, err_msg=f"{name} start={start} n={n} stride={stride}")
    if name.endswith(("mp4", "mkv")):  # the common containers must really take the seek path
        assert all(s is not None for s in seeks)


def test_seek_decode_with_resize_and_too_short_request(tmp_path, pan):
    path = _write_small_gop(tmp_path / "a.mp4", pan(20, (32, 48)), bframes=False)
    every = vio.read_video(path, size=(16, 24))
    np.testing.assert_array_equal(vio.read_video(path, size=(16, 24), start=11, num_frames=6), every[11:17])
    with pytest.raises(vio.VideoReadError, match="needs 25 frames"):
        vio.read_video(path, start=15, num_frames=10)


def test_gif_is_read_from_frame_zero_with_the_same_frames(skimage_gif):
    every = vio.read_video(skimage_gif)
    np.testing.assert_array_equal(vio.read_video(skimage_gif, start=7, num_frames=5), every[7:12])


def test_one_reformatter_per_thread_reads_what_a_fresh_one_per_clip_does(tmp_path, pan, skimage_gif, monkeypatch):
    """The thread's reused swscale context follows each clip's format and size (yuv420p, yuv444p, a palette GIF; native
    and resized): interleaved reads equal reads that build their own; another thread gets its own reformatter."""
    import threading

    clips = [_write_small_gop(tmp_path / "a.mp4", pan(12, (32, 48))), skimage_gif]
    with av.open(str(tmp_path / "b.mp4"), "w") as c:  # 4:4:4 like the demo's clips
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv444p"
        for f in pan(9, (32, 32)):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    clips.append(tmp_path / "b.mp4")
    reads = [(clip, size, start) for size in (None, (16, 24), (32, 32)) for clip in clips for start in (0, 3)]
    shared = [vio.read_video(clip, size=size, start=start, num_frames=2) for clip, size, start in reads]
    assert len({id(vio._thread_reformatter()), id(vio._thread_reformatter())}) == 1
    other: list[int] = []
    worker = threading.Thread(target=lambda: other.append(id(vio._thread_reformatter())))
    worker.start()
    worker.join()
    assert other[0] != id(vio._thread_reformatter())
    monkeypatch.setattr(vio, "_thread_reformatter", vio.VideoReformatter)  # a fresh swscale context per clip
    for (clip, size, start), got in zip(reads, shared, strict=True):
        np.testing.assert_array_equal(got, vio.read_video(clip, size=size, start=start, num_frames=2),
                                      err_msg=f"{clip} size={size} start={start}")


@pytest.mark.timeout(120)
def test_dataloader_workers_forked_after_reads_decode_small_and_large_clips(tmp_path, pan):
    """Forked DataLoader workers inherit the parent's reused swscale context: they must read what the parent reads
    (a context that owned swscale threads hung the workers). A small clip (the reused, single-threaded context) and a
    large one (a fresh, threaded context per clip), each read in the parent first."""
    import torch
    from torch.utils.data import DataLoader

    small = _write_small_gop(tmp_path / "small.mp4", pan(6, (32, 48)))
    large = _write_small_gop(tmp_path / "large.mp4", pan(6, (272, 288)))
    reads = [(small, None), (small, (16, 24)), (large, None), (large, (64, 64))]
    parent = [vio.read_video(clip, size=size, start=1, num_frames=3) for clip, size in reads]

    class Reads(torch.utils.data.Dataset):
        def __len__(self):
            return len(reads)

        def __getitem__(self, i):
            return vio.read_video(reads[i][0], size=reads[i][1], start=1, num_frames=3)

    loader = DataLoader(Reads(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    for (clip, size), want, got in zip(reads, parent, list(loader), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{clip.name} size={size}")
