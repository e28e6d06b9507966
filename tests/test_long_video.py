"""Videos longer than the transformer's latent grid by sliding-window continuation (`maskgit.windows`): each window
after the first is primed on the last latent frames of the previous one, so the joins are continuous (the primed
codes are the previous window's), and the tokenizer decodes the whole sequence."""

from __future__ import annotations

import itertools

import pytest
import torch

import maskgit.windows
from maskgit.windows import Window, plan_windows
from tests.helpers.media import real_pan_clip
from tests.helpers.models import build_pipeline, gen


def test_plan_windows():
    assert plan_windows(3, 3) == [Window(0, 3, 0)]
    assert plan_windows(5, 3) == [Window(0, 3, 0), Window(2, 3, 1)]
    assert plan_windows(4, 3) == [Window(0, 3, 0), Window(2, 2, 1)]
    assert plan_windows(5, 3, overlap=2) == [Window(0, 3, 0), Window(1, 3, 2), Window(2, 3, 2)]
    assert plan_windows(10, 5) == [Window(0, 5, 0), Window(3, 5, 2), Window(6, 4, 2)]
    for total, window, overlap in [(9, 3, 1), (17, 5, 2), (12, 4, 3), (7, 2, 1)]:
        windows = plan_windows(total, window, overlap)
        covered = set()
        for prev, w in itertools.pairwise(windows):
            assert w.start == prev.start + prev.length - w.primed and w.primed == overlap  # joins overlap exactly
        for w in windows:
            assert 1 <= w.length <= window
            covered |= set(range(w.start, w.start + w.length))
        assert covered == set(range(total)) and windows[-1].start + windows[-1].length == total
    with pytest.raises(ValueError, match=r"window_overlap must be an int in \[1, 2\]"):
        plan_windows(5, 3, overlap=3)
    with pytest.raises(ValueError, match="at least 2 latent frames"):
        plan_windows(5, 1)


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline()  # 16x16, f=2, transformer grid 3x8x8: one window holds 5 frames


def recorded_windows(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(known_codes, sampled codes) of every sampler call the pipeline makes."""
    calls = []
    real = maskgit.windows.sample

    def spy(*args, known_codes=None, **kwargs):
        out = real(*args, known_codes=known_codes, **kwargs)
        calls.append((known_codes.clone(), out.clone()))
        return out

    monkeypatch.setattr(maskgit.windows, "sample", spy)
    return calls


@pytest.mark.parametrize("overlap", [None, 2])
def test_windows_join_on_the_previous_windows_codes(pipe, monkeypatch, overlap):
    calls = recorded_windows(monkeypatch)
    steps = []
    codes = pipe(["a red ball", "clouds"], num_frames=9, window_overlap=overlap, generator=gen(0),
                 output_type="latent", callback=lambda step, total, c: steps.append((step, total))).frames
    assert codes.shape == (2, 5, 8, 8)  # 9 frames = 5 latent frames, more than the transformer's 3
    windows = pipe.plan(9, overlap)
    assert len(calls) == len(windows) == (2 if overlap is None else 3)
    n = 8 * 8
    for (known, out), w in zip(calls, windows):
        known, out = known.view(2, -1, 8, 8), out.view(2, -1, 8, 8)
        assert known.shape[1] == w.length
        assert bool((known[:, w.primed :] == -1).all())  # the rest is sampled
        assert torch.equal(out, codes[:, w.start : w.start + w.length])  # what each window gave is in the video
    for (_, prev), (known, _), w in zip(calls, calls[1:], windows[1:]):
        # the join: the primed latent frames ARE the previous window's last ones, and stay fixed
        prev = prev.view(2, -1, 8, 8)
        assert torch.equal(known.view(2, -1, 8, 8)[:, : w.primed], prev[:, -w.primed :])
        assert known.shape[1] == w.length * n
    total = 4 * len(windows)
    assert steps == [(i, total) for i in range(total)]


def test_long_video_decodes_whole_and_reproduces(pipe):
    video = pipe("a red ball", num_frames=9, generator=gen(1), output_type="pt").frames
    assert video.shape == (1, 3, 9, 16, 16)
    codes = pipe("a red ball", num_frames=9, generator=gen(1), output_type="latent").frames
    with torch.no_grad():
        assert torch.equal(video, pipe.tokenizer.decode_from_code_indices(codes).clamp(-1, 1))
    batch = pipe(["a red ball", "clouds"], num_frames=11, generator=[gen(1), gen(2)], output_type="latent").frames
    alone = pipe("clouds", num_frames=11, generator=gen(2), output_type="latent").frames
    assert batch.shape == (2, 6, 8, 8) and torch.equal(batch[1], alone[0])
    # a prime longer than one window fixes the first window entirely; the next windows continue it
    prime = real_pan_clip(7, 16)  # 4 latent frames
    primed = pipe("pan", num_frames=11, prime_video=prime, generator=gen(3), output_type="latent").frames
    assert torch.equal(primed[:, :4], pipe.tokenizer.tokenize(prime))


def test_generate_command_chains_windows(tmp_path, caplog):
    from scripts.generate import main
    from trainers.data.video_io import read_video

    build_pipeline(num_inference_steps=2).save_pretrained(tmp_path / "pipe")
    with caplog.at_level("INFO"):
        assert main(["--model", str(tmp_path / "pipe"), "--prompt", "a red ball", "--num-frames", "9",
                     "--out-dir", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert "--num-frames 9 is more than the 5 frames the model generates at once: chaining 2 windows" in caplog.text
    assert read_video(next((tmp_path / "out").glob("*.mp4"))).shape == (9, 16, 16, 3)
