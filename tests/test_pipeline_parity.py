"""What diffusers users type on a pipeline: a list of generators (one per video), tensor `prompt_embeds` (+ masks,
+ negative), `height`/`width`, `.components`, `.config`, `.dtype`, `.device`, `set_progress_bar_config`,
`enable_model_cpu_offload` (its bookkeeping on the CPU; the real move on a GPU when there is one), and
`model_index.json` in saved pipelines (folders without it still load)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from maskgit import TextToVideoPipeline
from tests.helpers.models import build_pipeline, gen


@pytest.fixture(scope="module")
def pipe() -> TextToVideoPipeline:
    return build_pipeline()


def test_a_list_of_generators_gives_each_video_its_own(pipe):
    prompts = ["a red ball", "clouds over a hill", "a cat"]
    batch = pipe(prompts, generator=[gen(10), gen(11), gen(12)], output_type="latent").frames
    for i, prompt in enumerate(prompts):  # each row is what that prompt alone gives with its generator
        assert torch.equal(batch[i], pipe(prompt, generator=gen(10 + i), output_type="latent").frames[0])
    two = pipe(["a red ball"], num_videos_per_prompt=2, generator=[gen(10), gen(11)], output_type="latent").frames
    assert torch.equal(two[0], batch[0]) and not torch.equal(two[0], two[1])
    guided = pipe(prompts, guidance_scale=1.0, generator=[gen(1), gen(2), gen(3)], output_type="latent").frames
    alone = pipe(prompts[2], guidance_scale=1.0, generator=gen(3), output_type="latent").frames
    assert torch.equal(guided[2], alone[0])
    with pytest.raises(ValueError, match="a list of 2 generators for 3 videos"):
        pipe(prompts, generator=[gen(0), gen(1)])
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator, a list of them"):
        pipe("a", generator=0)


def test_tensor_prompt_embeds_with_attention_masks(pipe):
    prompts = ["a red ball", "clouds over a hill at dusk"]
    emb = pipe.text_encoder.encode(prompts)  # (2, m, 16) + mask, rows padded to the longest
    want = pipe(prompts, negative_prompt="noise", generator=gen(3), output_type="latent").frames
    neg = pipe.text_encoder.encode(["noise"])
    got = pipe(prompt_embeds=emb.embeds, prompt_attention_mask=emb.mask, negative_prompt_embeds=neg.embeds,
               generator=gen(3), output_type="latent").frames
    assert torch.equal(got, want)
    one = pipe.text_encoder.encode(["a red ball"])  # no padding: the mask defaults to all tokens real
    assert torch.equal(pipe(prompt_embeds=one.embeds, generator=gen(4), output_type="latent").frames,
                       pipe("a red ball", generator=gen(4), output_type="latent").frames)
    with pytest.raises(ValueError, match=r"prompt_embeds must be a float tensor \(b, m, text_dim\)"):
        pipe(prompt_embeds=emb.embeds[:, 0])
    with pytest.raises(ValueError, match="attention mask of prompt_embeds must be a tensor"):
        pipe(prompt_embeds=emb.embeds, prompt_attention_mask=emb.mask[:, :1])
    with pytest.raises(ValueError, match="prompt_attention_mask goes with prompt_embeds"):
        pipe("a", prompt_attention_mask=emb.mask)


def test_height_and_width_are_checked_against_the_model(pipe):
    assert pipe("a", height=16, width=16, generator=gen(0)).frames.shape == (1, 5, 16, 16, 3)
    with pytest.raises(ValueError, match=r"height=32: this pipeline generates 16x16 frames"):
        pipe("a", height=32, width=32)
    with pytest.raises(ValueError, match="width=8"):
        pipe("a", width=8)


def test_components_config_dtype_device(pipe):
    assert list(pipe.components) == ["tokenizer", "text_encoder", "transformer"]
    again = TextToVideoPipeline(**pipe.components, defaults=pipe.defaults)
    assert torch.equal(again("a", generator=gen(5), output_type="latent").frames,
                       pipe("a", generator=gen(5), output_type="latent").frames)
    config = pipe.config
    assert config["_class_name"] == "TextToVideoPipeline" and config["_magvit2_maskgit_version"]
    assert config["tokenizer"] == ["magvit2", "VideoTokenizer"] and config["transformer"] == ["maskgit",
                                                                                            "MaskGitTransformer"]
    assert config["text_encoder"] == ["maskgit", "TinyTextEncoder"]
    assert (config["height"], config["width"], config["max_num_frames"]) == (16, 16, 5)
    assert config["defaults"]["num_inference_steps"] == 4
    assert pipe.dtype == torch.float32 and pipe.device == torch.device("cpu")


def test_progress_bar_config(pipe, capsys):
    stream = io.StringIO()
    pipe.set_progress_bar_config(disable=False, file=stream, desc="sampling")
    try:
        pipe("a", generator=gen(0), output_type="latent")
    finally:
        pipe.set_progress_bar_config()
    assert "sampling" in stream.getvalue() and "4/4" in stream.getvalue()
    pipe.set_progress_bar_config(disable=True, file=stream)
    before = stream.getvalue()
    pipe("a", generator=gen(0), output_type="latent")
    pipe.set_progress_bar_config()
    assert stream.getvalue() == before


def test_model_cpu_offload_bookkeeping(monkeypatch):
    """device="cpu" (no accelerator here): each component is moved to the execution device just before it runs
    and back just after, one at a time; results are unchanged."""
    pipe = build_pipeline()
    want = pipe("a red ball", prime_video=torch.zeros(1, 3, 1, 16, 16), generator=gen(2), output_type="pt").frames
    log: list[tuple[str, str]] = []
    real_move = TextToVideoPipeline._move

    def move(self, name, device):
        log.append((name, str(device)))
        real_move(self, name, device)

    monkeypatch.setattr(TextToVideoPipeline, "_move", move)
    pipe.enable_model_cpu_offload(device="cpu")
    assert pipe.offload_device == torch.device("cpu") and pipe.device == torch.device("cpu")
    assert [n for n, _ in log] == ["tokenizer", "text_encoder", "transformer"]  # everything parked on the CPU
    log.clear()
    steps = []
    got = pipe("a red ball", prime_video=torch.zeros(1, 3, 1, 16, 16), generator=gen(2), output_type="pt",
               callback=lambda step, total, codes: steps.append(len(log))).frames
    assert torch.equal(got, want)
    # text encoder (prompts), tokenizer (the prime), transformer (sampling), tokenizer (decoding): each on, then off
    assert [n for n, _ in log] == ["text_encoder"] * 2 + ["tokenizer"] * 2 + ["transformer"] * 2 + ["tokenizer"] * 2
    assert all(device == "cpu" for _, device in log)
    assert steps == [5] * 4  # every sampling step ran while the transformer (and only it) was on
    with pytest.raises(ValueError, match="model CPU offload is on"):
        pipe.to("meta")


def test_cuda_offload_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    with pytest.raises(ValueError, match="CUDA is not available"):
        build_pipeline().enable_model_cpu_offload()


# model CPU offload on a real GPU: benchmarks/gpu_check.py (offload_check), run by `make gpu-check`


def test_model_index_json_written_and_old_folders_still_load(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((folder / "model_index.json").read_text())
    from magvit2.serialization import package_version

    assert index.pop("_magvit2_maskgit_version") == package_version()
    assert index == {"_class_name": "TextToVideoPipeline",
                     "tokenizer": ["magvit2", "VideoTokenizer"], "text_encoder": ["maskgit", "TinyTextEncoder"],
                     "transformer": ["maskgit", "MaskGitTransformer"], "text_encoder_name_or_path": "tiny:16"}
    (folder / "model_index.json").unlink()  # a folder written before model_index.json existed
    (folder / "README.md").unlink()
    old = TextToVideoPipeline.from_pretrained(folder)
    assert torch.equal(old("a", generator=gen(1), output_type="latent").frames,
                       pipe("a", generator=gen(1), output_type="latent").frames)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="names 'StableDiffusionPipeline', not 'TextToVideoPipeline'"):
        TextToVideoPipeline.from_pretrained(folder)
