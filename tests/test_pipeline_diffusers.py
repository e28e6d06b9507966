"""diffusers' contracts on TextToVideoPipeline: the output object (.frames, indexable, return_dict=False tuple),
output_type np (float [0, 1], (b, t, h, w, c)) / pt / pil / latent, callback_on_step_end, and the export_to_video
round trip (frames * 255 as uint8, written and read back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit import TextToVideoPipelineOutput
from tests.helpers.models import build_pipeline, gen
from trainers.data.video_io import read_video, write_video


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline()


def export_to_video(video_frames, path, fps=8):
    """diffusers.utils.export_to_video's pixel handling: float frames in [0, 1] -> (x * 255).astype(uint8)."""
    if isinstance(video_frames[0], np.ndarray):
        video_frames = [(frame * 255).astype(np.uint8) for frame in video_frames]
    elif isinstance(video_frames[0], Image.Image):
        video_frames = [np.array(frame) for frame in video_frames]
    return write_video(path, np.stack(video_frames), fps=fps, lossless=True)


def test_output_object_and_output_types(pipe):
    out = pipe(["a red ball", "clouds"], generator=gen(0))  # diffusers' default: output_type="np", return_dict
    assert isinstance(out, TextToVideoPipelineOutput)
    frames = out.frames
    assert isinstance(frames, np.ndarray) and frames.dtype == np.float32 and frames.shape == (2, 5, 16, 16, 3)
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    assert out[0] is frames and out.to_tuple()[0] is frames
    (tup,) = pipe(["a red ball", "clouds"], generator=gen(0), return_dict=False)
    np.testing.assert_array_equal(tup, frames)

    pt = pipe(["a red ball", "clouds"], generator=gen(0), output_type="pt").frames
    assert pt.shape == (2, 3, 5, 16, 16) and float(pt.min()) >= -1 and float(pt.max()) <= 1
    np.testing.assert_allclose(frames, ((pt + 1) / 2).permute(0, 2, 3, 4, 1).numpy(), atol=1e-6)

    pil = pipe(["a red ball", "clouds"], generator=gen(0), output_type="pil").frames
    assert len(pil) == 2 and all(len(v) == 5 for v in pil)
    assert isinstance(pil[0][0], Image.Image) and pil[0][0].size == (16, 16) and pil[0][0].mode == "RGB"
    from magvit2.pixels import to_uint8

    np.testing.assert_array_equal(np.stack([np.asarray(f) for f in pil[1]]), to_uint8(pt)[1])

    latent = pipe(["a red ball", "clouds"], generator=gen(0), output_type="latent").frames
    assert latent.shape == (2, 3, 8, 8) and latent.dtype == torch.long
    assert int(latent.min()) >= 0 and int(latent.max()) < 64


def test_callback_on_step_end(pipe):
    seen = []

    def on_step_end(p, step, timestep, callback_kwargs):
        assert p is pipe
        seen.append((step, timestep, tuple(callback_kwargs["latents"].shape),
                     int((callback_kwargs["latents"] == 64).sum()), sorted(callback_kwargs)))
        return callback_kwargs

    plain = pipe("a", generator=gen(3), output_type="latent", num_inference_steps=4).frames
    old_style = []
    codes = pipe("a", generator=gen(3), output_type="latent", num_inference_steps=4,
                 callback=lambda step, total, c: old_style.append(step),
                 callback_on_step_end=on_step_end).frames
    assert torch.equal(codes, plain)  # observing does not change the result
    assert [(s[0], s[1], s[2]) for s in seen] == [(i, 3 - i, (1, 3, 8, 8)) for i in range(4)]
    assert seen[-1][3] == 0 and all(s[4] == ["latents"] for s in seen) and old_style == [0, 1, 2, 3]

    extra = []
    pipe("a", generator=gen(3), output_type="latent", num_inference_steps=2,
         callback_on_step_end=lambda p, i, t, kw: extra.append(sorted(kw)) or {},
         callback_on_step_end_tensor_inputs=["latents", "preview", "num_masked"])
    assert extra == [["latents", "num_masked", "preview"]] * 2
    with pytest.raises(ValueError, match="not available"):
        pipe("a", callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    with pytest.raises(ValueError, match="must return a dict"):
        pipe("a", num_inference_steps=2, callback_on_step_end=lambda *a: 3)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def test_export_to_video_round_trip(pipe, tmp_path):
    frames = pipe("a red ball", generator=gen(1)).frames[0]  # (t, h, w, 3) float in [0, 1]
    written = (frames * 255).astype(np.uint8)
    assert np.abs(written / 255.0 - frames).max() <= 1 / 255 + 1e-6  # no overflow, no double scaling
    back = read_video(export_to_video(frames, tmp_path / "out.mp4"))
    assert back.shape == (5, 16, 16, 3) and back.dtype == np.uint8
    assert _psnr(back, written) > 40  # "lossless" H.264 goes through YUV: a level or two at most
    assert abs(float(back.mean()) - float(written.mean())) < 1.0

    pil = pipe("a red ball", generator=gen(1), output_type="pil").frames[0]
    back = read_video(export_to_video(pil, tmp_path / "pil.mp4"))
    assert _psnr(back, written) > 40
