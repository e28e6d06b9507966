"""The one model-path rule (`magvit2.model_paths`) for every class and every command that takes a model: a
`save_pretrained` folder, a run folder (its export), a pipeline folder or subfolder (`subfolder=`, local or Hub),
or a Hub repo id through huggingface_hub's cache (a cache layout built under a temporary HF_HUB_CACHE with
HF_HUB_OFFLINE=1, as tests/test_hub.py does; never the network)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from magvit2 import VideoTokenizer
from magvit2.hub import HubModelNotFoundError
from maskgit import MaskGitTransformer, TextToVideoPipeline
from tests.helpers.hub import put_in_cache
from tests.helpers.models import build_pipeline, gen


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tokenizer run folder (RUN/tokenizer), a MaskGit run folder (RUN/pipeline) and plain folders, all holding
    the same weights; plus a Hub cache holding them as repos."""
    root = tmp_path_factory.mktemp("paths")
    pipe = build_pipeline()
    pipe.save_pretrained(root / "mg" / "pipeline")  # a MaskGit run's export
    pipe.tokenizer.save_pretrained(root / "tok-run" / "tokenizer", training={"num_frames": 5, "step": 3})
    pipe.tokenizer.save_pretrained(root / "tok")
    pipe.transformer.save_pretrained(root / "transformer")
    cache = root / "hub-cache"
    put_in_cache(cache, "me/tiny-t2v", root / "mg" / "pipeline")
    put_in_cache(cache, "me/tiny-run", root / "mg")  # a whole run folder uploaded: the pipeline in pipeline/
    put_in_cache(cache, "me/tiny-tok", root / "tok")
    return {"root": root, "pipe": pipe, "cache": cache}


@pytest.fixture
def offline_cache(runs, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(runs["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return runs["cache"]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tokenizer_from_every_kind_of_path(runs, offline_cache):
    root, want = runs["root"], runs["pipe"].tokenizer
    for name, kwargs in [(root / "tok", {}), (root / "tok-run", {}), (root / "mg" / "pipeline", {}),
                         (root / "mg", {}), (str(root / "mg" / "pipeline"), {"subfolder": "tokenizer"}),
                         ("me/tiny-tok", {}), ("me/tiny-t2v", {"subfolder": "tokenizer"}), ("me/tiny-t2v", {}),
                         ("me/tiny-run", {"subfolder": "pipeline/tokenizer"})]:
        tok = VideoTokenizer.from_pretrained(name, **kwargs)
        assert same_weights(tok, want), (name, kwargs)
        assert not tok.training
        assert tok.hub_repo_id == (str(name) if str(name).startswith("me/") else None)
    assert VideoTokenizer.from_pretrained(root / "tok-run").pretrained_training == {"num_frames": 5, "step": 3}


def test_transformer_from_every_kind_of_path(runs, offline_cache):
    root, want = runs["root"], runs["pipe"].transformer
    for name, kwargs in [(root / "transformer", {}), (root / "mg", {}), (root / "mg" / "pipeline", {}),
                         (root / "mg" / "pipeline", {"subfolder": "transformer"}),
                         ("me/tiny-t2v", {"subfolder": "transformer"}), ("me/tiny-t2v", {}), ("me/tiny-run", {})]:
        assert same_weights(MaskGitTransformer.from_pretrained(name, **kwargs), want), (name, kwargs)


def test_pipeline_from_a_folder_a_run_folder_and_the_hub(runs, offline_cache):
    root, pipe = runs["root"], runs["pipe"]
    expected = pipe("a red ball", generator=gen(0), output_type="latent").frames
    for name, kwargs in [(root / "mg" / "pipeline", {}), (root / "mg", {}), (root, {"subfolder": "mg"}),
                         ("me/tiny-t2v", {}), ("me/tiny-run", {}), ("me/tiny-run", {"subfolder": "pipeline"})]:
        loaded = TextToVideoPipeline.from_pretrained(name, **kwargs)
        assert torch.equal(loaded("a red ball", generator=gen(0), output_type="latent").frames, expected), name


def test_clear_errors(runs, offline_cache, tmp_path):
    root = runs["root"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no config\.json naming 'VideoTokenizer' in it or in tokenizer/, "
                                                r"pipeline/tokenizer/"):
        VideoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds a 'MaskGitTransformer', not a 'VideoTokenizer'"):
        VideoTokenizer.from_pretrained(root / "transformer")
    with pytest.raises(ValueError, match="subfolder must be a relative folder"):
        VideoTokenizer.from_pretrained(root / "mg", subfolder="../tok")
    with pytest.raises(FileNotFoundError, match="has no subfolder 'nope'"):
        VideoTokenizer.from_pretrained(root / "mg", subfolder="nope")
    with pytest.raises(HubModelNotFoundError, match=r"'me/absent' .* offline .*\(hf download me/absent\)"):
        TextToVideoPipeline.from_pretrained("me/absent")
    (tmp_path / "diffusers").mkdir()  # a diffusers folder: another library's pipeline
    (tmp_path / "diffusers" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(FileNotFoundError, match=r"no pipeline\.json"):
        TextToVideoPipeline.from_pretrained(tmp_path / "diffusers")


# ----------------------------------------------------------------------------------------------------------------
# every command that takes a model


def test_inference_commands_take_hub_ids_run_folders_and_pipelines(runs, offline_cache, tmp_path, make_clip,
                                                                   capsys):
    from scripts.evaluate import main as evaluate
    from scripts.generate import main as generate
    from scripts.reconstruct import main as reconstruct
    from scripts.tokenize_videos import main as tokenize

    clip = make_clip("data/a.mp4", num_frames=5, size=(16, 16))
    make_clip("data/b.mp4", num_frames=5, size=(16, 16), photo="coffee")
    root = runs["root"]
    codes = {}
    for i, name in enumerate(("me/tiny-tok", "me/tiny-t2v", str(root / "tok-run"), str(root / "mg"))):
        assert reconstruct(["--tokenizer", name, str(clip), "--out-dir", str(tmp_path / f"r{i}"), "--device",
                            "cpu"]) == 0
        assert tokenize(["--tokenizer", name, "--data", str(tmp_path / "data"), "--out", str(tmp_path / f"c{i}"),
                         "--num-frames", "5", "--device", "cpu"]) == 0
        codes[name] = json.loads((tmp_path / f"c{i}" / "index.json").read_text())["num_clips"]
        assert evaluate(["--tokenizer", name, "--data", str(tmp_path / "data"), "--num-frames", "5",
                         "--device", "cpu"]) == 0
    assert set(codes.values()) == {2}
    for i, name in enumerate(("me/tiny-t2v", "me/tiny-run", str(root / "mg"))):
        assert generate(["--model", name, "--prompt", "a red ball", "--out-dir", str(tmp_path / f"g{i}"),
                         "--device", "cpu"]) == 0
        line = json.loads((tmp_path / f"g{i}" / "samples.jsonl").read_text())
        assert line["model_arg"] == name
    assert generate(["--model", "me/absent", "--prompt", "x", "--device", "cpu"]) == 2
    assert "'me/absent'" in capsys.readouterr().err


def test_training_commands_take_hub_ids(runs, offline_cache, tmp_path, monkeypatch):
    """magvit2-train-maskgit --tokenizer / --init-from and magvit2-train-tokenizer --init-from with Hub ids: the
    models load through the cache, and the exports' model cards name them as base_model."""
    from huggingface_hub import ModelCard

    from tests.helpers.training import make_stage_two, maskgit_config, tokenizer_config
    from trainers.maskgit_trainer import MaskGitTrainer
    from trainers.model_sources import load_init_weights
    from trainers.tokenizer_trainer import TokenizerTrainer

    data = make_stage_two(tmp_path / "stage2")
    put_in_cache(runs["cache"], "me/stage2-tok", data["tokenizer"])
    MaskGitTrainer(maskgit_config("--max-steps", "1"), data["tokenizer"], tmp_path / "base",
                   codes_dir=data["codes"]).fit()
    put_in_cache(runs["cache"], "me/stage2-t2v", tmp_path / "base" / "pipeline")
    _, state, what = load_init_weights("me/stage2-t2v")
    assert what == "pipeline me/stage2-t2v" and "pos_t" in state

    t = MaskGitTrainer(maskgit_config("--max-steps", "1"), "me/stage2-tok", tmp_path / "ft", codes_dir=data["codes"],
                       init_from="me/stage2-t2v")
    assert same_weights(t.tokenizer, VideoTokenizer.from_pretrained(data["tokenizer"]))
    t.fit()
    card = ModelCard.load(tmp_path / "ft" / "pipeline" / "README.md")
    assert card.data.base_model == ["me/stage2-tok", "me/stage2-t2v"]
    assert card.data.magvit2_training["trainer"] == "maskgit" and card.data.magvit2_training["step"] == 1

    tt = TokenizerTrainer(tokenizer_config("--max-steps", "1", "--num-frames", "5"), [data["clips"]],
                          tmp_path / "tok-ft", init_from="me/stage2-tok")
    assert same_weights(tt.tokenizer, VideoTokenizer.from_pretrained(data["tokenizer"]))
    tt.fit()
    card = ModelCard.load(tmp_path / "tok-ft" / "tokenizer" / "README.md")
    assert card.data.base_model == ["me/stage2-tok"] and card.data.license == "mit"


def test_checkpoint_marker_matches_the_checkpoint_manager():
    from trainers.checkpointing import MARKER
    from trainers.model_sources import CHECKPOINT_MARKER

    assert CHECKPOINT_MARKER == MARKER


def test_hub_snapshot_is_used_read_only(runs, offline_cache):
    """Loading from the cache never writes into it (no README, no sample copied back)."""
    before = sorted(str(p) for p in Path(offline_cache).rglob("*"))
    TextToVideoPipeline.from_pretrained("me/tiny-t2v")
    assert sorted(str(p) for p in Path(offline_cache).rglob("*")) == before
    assert os.environ["HF_HUB_OFFLINE"] == "1"
