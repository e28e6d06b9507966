"""TextToVideoPipeline on a tiny tokenizer (16x16, f=2, 64 codes) + TinyTextEncoder + the tiny preset transformer."""

import json

import numpy as np
import pytest
import torch

from maskgit import MaskGitTransformer, PipelineDefaults, TextToVideoPipeline, TinyTextEncoder
from tests.helpers.media import real_pan_clip
from tests.helpers.models import TEXT_DIM, build_pipeline, gen, tiny_maskgit_config


@pytest.fixture(scope="module")
def pipe() -> TextToVideoPipeline:
    return build_pipeline()


def test_output_types_shapes_and_ranges(pipe):
    video = pipe(["a red ball", "clouds"], num_videos_per_prompt=2, generator=gen(0), output_type="pt").frames
    assert video.shape == (4, 3, 5, 16, 16) and video.dtype == torch.float32
    assert float(video.min()) >= -1.0 and float(video.max()) <= 1.0
    frames = pipe(["a red ball", "clouds"], num_videos_per_prompt=2, generator=gen(0), output_type="np").frames
    assert isinstance(frames, np.ndarray) and frames.shape == (4, 5, 16, 16, 3) and frames.dtype == np.float32
    assert frames.min() >= 0.0 and frames.max() <= 1.0  # diffusers' "np": float in [0, 1]
    np.testing.assert_allclose(frames, ((video + 1) / 2).permute(0, 2, 3, 4, 1).numpy(), atol=1e-6)
    codes = pipe("a red ball", num_frames=3, generator=gen(0), output_type="latent").frames
    assert codes.shape == (1, 2, 8, 8) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    assert pipe.max_num_frames == 5 and pipe.device == torch.device("cpu")
    with pytest.raises(ValueError, match="output_type"):
        pipe("x", output_type="gif")


def test_determinism_by_seed_and_global_rng_untouched(pipe):
    state = torch.get_rng_state()
    a = pipe("a red ball", generator=gen(1), output_type="latent").frames
    b = pipe("a red ball", generator=gen(1), output_type="latent").frames
    c = pipe("a red ball", generator=gen(2), output_type="latent").frames
    d = pipe("a red ball", output_type="latent").frames  # OS-seeded
    e = pipe("a red ball", output_type="latent").frames
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(d, e)
    torch.manual_seed(123)  # the global RNG does not influence the result either
    assert torch.equal(pipe("a red ball", generator=gen(1), output_type="latent").frames, a)
    torch.set_rng_state(state)


def test_prompt_embeds_equal_prompt_and_argument_errors(pipe):
    embeds = pipe.text_encoder.encode(["a red ball"])
    assert torch.equal(pipe(prompt_embeds=embeds, generator=gen(3), output_type="latent").frames,
                       pipe("a red ball", generator=gen(3), output_type="latent").frames)
    with pytest.raises(ValueError, match="exactly one of prompt and prompt_embeds"):
        pipe("a red ball", prompt_embeds=embeds)
    with pytest.raises(ValueError, match="prompt_embeds"):
        pipe()
    with pytest.raises(ValueError, match="empty list"):
        pipe([])
    with pytest.raises(ValueError, match="2 negative prompts for 3 prompts"):
        pipe(["a", "b", "c"], negative_prompt=["x", "y"])
    with pytest.raises(ValueError, match="at most one of negative_prompt"):
        pipe("a", negative_prompt="x", negative_prompt_embeds=embeds)
    with pytest.raises(ValueError, match="width 8"):
        pipe(prompt_embeds=TinyTextEncoder(dim=8).encode(["a"]))
    with pytest.raises(ValueError, match="num_videos_per_prompt"):
        pipe("a", num_videos_per_prompt=0)


def test_bad_num_frames_messages(pipe):
    with pytest.raises(ValueError, match=r"num_frames=4 is not 1 \+ 2k; try 3 or 5"):
        pipe("a", num_frames=4)
    with pytest.raises(ValueError, match=r"needs 4 latent frames .* at most 3 \(num_frames <= 5\)"):
        pipe.latent_grid(7)  # one window; longer videos chain windows (tests/test_long_video.py)
    with pytest.raises(ValueError, match=r"window_overlap must be an int in \[1, 2\]"):
        pipe("a", num_frames=7, window_overlap=3)
    with pytest.raises(ValueError, match=r"num_frames=4 is not 1 \+ 2k"):
        build_pipeline(num_frames=4)


def test_vocabulary_and_width_mismatch_raise_at_construction(pipe):
    transformer = MaskGitTransformer(tiny_maskgit_config(codebook_size=128, latent_shape=(3, 8, 8)))
    with pytest.raises(ValueError, match=r"vocabulary mismatch: the tokenizer has 64 codes .* codebook_size=128"):
        TextToVideoPipeline(pipe.tokenizer, pipe.text_encoder, transformer)
    with pytest.raises(ValueError, match=r"text width mismatch: .* 8-d .* text_dim=16"):
        TextToVideoPipeline(pipe.tokenizer, TinyTextEncoder(dim=8), pipe.transformer)
    small_grid = MaskGitTransformer(tiny_maskgit_config(codebook_size=64, latent_shape=(3, 4, 4)))
    with pytest.raises(ValueError, match="latent grid mismatch"):
        TextToVideoPipeline(pipe.tokenizer, pipe.text_encoder, small_grid)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0, (1.0, 4.0)])
def test_guidance_scales_run(pipe, scale):
    codes = pipe(["a red ball", "clouds"], guidance_scale=scale, generator=gen(0), output_type="latent").frames
    assert codes.shape == (2, 3, 8, 8)


def test_negative_prompt(pipe):
    plain = pipe("a red ball", guidance_scale=3.0, generator=gen(4), output_type="latent").frames
    negative = pipe("a red ball", negative_prompt="blurry", guidance_scale=3.0, generator=gen(4),
                    output_type="latent").frames
    assert not torch.equal(plain, negative)
    # s = 1 computes no unconditional half, so a negative prompt changes nothing
    assert torch.equal(pipe("a", negative_prompt="blurry", guidance_scale=1.0, generator=gen(4),
                            output_type="latent").frames,
                       pipe("a", guidance_scale=1.0, generator=gen(4), output_type="latent").frames)
    embeds = pipe.text_encoder.encode(["blurry"])
    assert torch.equal(pipe("a red ball", negative_prompt_embeds=embeds, guidance_scale=3.0, generator=gen(4),
                            output_type="latent").frames, negative)


def test_prime_video_codes_stay_fixed_and_frames_reproduce_reconstruction(pipe):
    tok = pipe.tokenizer
    prime = real_pan_clip(3, 16)  # (1, 3, 3, 16, 16) -> 2 latent frames
    prime_codes = tok.tokenize(prime)
    codes = pipe("the camera pans", prime_video=prime, generator=gen(5), output_type="latent").frames
    assert torch.equal(codes[:, :2], prime_codes)
    video = pipe("the camera pans", prime_video=prime, generator=gen(5), output_type="pt").frames
    with torch.no_grad():
        recon = tok.eval().decode_from_code_indices(prime_codes)  # (1, 3, 3, 16, 16)
    assert torch.equal(video[:, :, :3], recon.clamp(-1, 1))  # causal decoder: exactly equal, not just close
    assert torch.equal(video, pipe("the camera pans", prime_codes=prime_codes, generator=gen(5),
                                   output_type="pt").frames)

    image = prime[:, :, 0]  # (1, 3, 16, 16): image-to-video, one latent frame; broadcast to every prompt
    codes = pipe(["a", "b"], prime_video=image, num_videos_per_prompt=2, generator=gen(6),
                 output_type="latent").frames
    assert all(torch.equal(c[:1], tok.tokenize(image)[0]) for c in codes)
    assert not torch.equal(codes[0, 1:], codes[1, 1:])  # only the primed frame is shared


def test_prime_errors(pipe):
    prime = real_pan_clip(3, 16)
    with pytest.raises(ValueError, match="at most one of prime_video and prime_codes"):
        pipe("a", prime_video=prime, prime_codes=pipe.tokenizer.tokenize(prime))
    with pytest.raises(ValueError, match="frames of size"):
        pipe("a", prime_video=real_pan_clip(3, 24))
    with pytest.raises(ValueError, match=r"need 1 \+ 2k"):
        pipe("a", prime_video=real_pan_clip(4, 16))
    with pytest.raises(ValueError, match="gives 3 latent frames but the clip has 2"):
        pipe("a", num_frames=3, prime_video=real_pan_clip(5, 16))
    with pytest.raises(ValueError, match=r"prime_codes must lie in \[0, 64\)"):
        pipe("a", prime_codes=torch.full((1, 1, 8, 8), 64))
    with pytest.raises(ValueError, match="8x8 codes per latent frame"):
        pipe("a", prime_codes=torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch 2 for 3 prompts"):
        pipe(["a", "b", "c"], prime_codes=torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_train_mode_restored_and_callback(pipe):
    pipe.transformer.train()
    pipe.tokenizer.train()
    seen = []
    try:
        codes = pipe("a", generator=gen(7), output_type="latent",
                     callback=lambda step, total, c: seen.append((step, total, tuple(c.shape),
                                                                  int((c == 64).sum())))).frames
        assert pipe.transformer.training and pipe.tokenizer.training
    finally:
        pipe.transformer.eval()
        pipe.tokenizer.eval()
    assert [s[:3] for s in seen] == [(i, 4, (1, 3, 8, 8)) for i in range(4)]
    masked = [s[3] for s in seen]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0
    assert torch.equal(codes, pipe("a", generator=gen(7), output_type="latent").frames)


def test_save_and_from_pretrained_round_trip(pipe, tmp_path):
    custom = TextToVideoPipeline(pipe.tokenizer, pipe.text_encoder, pipe.transformer,
                                 PipelineDefaults(num_frames=3, num_inference_steps=5, guidance_scale=(1.0, 3.0),
                                                  top_k=10, fps=12))
    custom.save_pretrained(tmp_path / "pipe")
    assert sorted(p.name for p in (tmp_path / "pipe").iterdir()) == ["README.md", "model_index.json", "pipeline.json",
                                                                     "tokenizer", "transformer"]
    assert {p.name for p in (tmp_path / "pipe" / "transformer").iterdir()} == {"config.json", "model.safetensors"}
    payload = json.loads((tmp_path / "pipe" / "pipeline.json").read_text())
    assert payload["text_encoder"] == {"spec": f"tiny:{TEXT_DIM}", "max_length": 77, "dim": TEXT_DIM}
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.defaults == custom.defaults and loaded.defaults.guidance_scale == (1.0, 3.0)
    assert not loaded.transformer.training and not loaded.tokenizer.training
    for kwargs in (dict(output_type="latent"), dict(negative_prompt="noise", output_type="pt")):
        assert torch.equal(custom(["a red ball", "clouds"], generator=gen(8), **kwargs).frames,
                           loaded(["a red ball", "clouds"], generator=gen(8), **kwargs).frames)
    override = TextToVideoPipeline.from_pretrained(tmp_path / "pipe",
                                                   text_encoder=TinyTextEncoder(dim=TEXT_DIM, seed=3))
    assert override.text_encoder.seed == 3


def test_from_pretrained_errors(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        TextToVideoPipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no pipeline\.json"):
        TextToVideoPipeline.from_pretrained(tmp_path / "empty")
    folder = pipe.save_pretrained(tmp_path / "pipe")
    config = folder / "pipeline.json"
    good = json.loads(config.read_text())
    for change, match in (({"extra": 1}, r"unknown keys \['extra'\]"), ({"_format_version": 2}, "format version 2"),
                          ({"_kind": "Other"}, "not a 'TextToVideoPipeline'"),
                          ({"defaults": {**good["defaults"], "cfg": 2}},
                           r"pipeline\.json: unknown keys in defaults: \['cfg'\]"),
                          ({"text_encoder": {"spec": "tiny:16"}}, "text_encoder must hold")):
        config.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=match):
            TextToVideoPipeline.from_pretrained(folder)
    config.write_text(json.dumps(good))
    other_vocabulary = MaskGitTransformer(tiny_maskgit_config(codebook_size=128, latent_shape=(3, 8, 8)))
    other_vocabulary.save_pretrained(folder / "transformer")
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        TextToVideoPipeline.from_pretrained(folder)
    for sub in ("transformer", "tokenizer"):
        for f in (folder / sub).iterdir():
            f.unlink()
        (folder / sub).rmdir()
        with pytest.raises(FileNotFoundError, match=f"no {sub}/ subfolder"):
            TextToVideoPipeline.from_pretrained(folder)


def test_best_of_returns_one_of_the_candidates_and_counts_their_steps(pipe):
    """best_of=2 keeps one of the two decodes a generator gives in a row, and the callback counts both."""
    g = gen(5)
    first = pipe("a red ball", generator=g, output_type="latent").frames
    second = pipe("a red ball", generator=g, output_type="latent").frames
    assert not torch.equal(first, second)
    seen = []
    best = pipe("a red ball", generator=gen(5), output_type="latent", best_of=2,
                callback=lambda step, total, c: seen.append((step, total))).frames
    assert torch.equal(best, first) or torch.equal(best, second)
    assert seen == [(i, 8) for i in range(8)]  # 4 steps per decode (the tiny recipe), two decodes
    with pytest.raises(ValueError, match="best_of must be a positive int"):
        pipe("a", best_of=0)
