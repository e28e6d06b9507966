"""Hugging Face Hub: from_pretrained of a repo id through huggingface_hub's cache (a cache layout built here, with
snapshot files linked into blobs/ as huggingface_hub writes them; never the network), the fast error naming the id,
and push_to_hub with its model card (huggingface_hub's upload monkeypatched; what would be uploaded is checked)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from magvit2 import VideoTokenizer, preset_config
from magvit2.hub import HubModelNotFoundError, is_repo_id
from maskgit import MaskGitTransformer, TextToVideoPipeline
from tests.helpers.hub import put_in_cache
from tests.helpers.models import build_pipeline, gen


def test_repo_ids_and_paths():
    assert is_repo_id("owner/name") and is_repo_id("name-1.0") and is_repo_id("org/model_v2")
    assert not any(is_repo_id(s) for s in ("./x", "/abs/path", "a/b/c", "../x", "~/x", "a/../b", ""))


def test_tokenizer_and_transformer_from_a_cached_repo(hub_cache, tmp_path):
    torch.manual_seed(0)
    tok = VideoTokenizer(preset_config("tiny"))
    tok.save_pretrained(tmp_path / "tok", training={"num_frames": 5, "frame_stride": 1, "step": 7})
    put_in_cache(hub_cache, "me/tiny-tokenizer", tmp_path / "tok")
    loaded = VideoTokenizer.from_pretrained("me/tiny-tokenizer")
    for k, v in tok.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert loaded.pretrained_training == {"num_frames": 5, "frame_stride": 1, "step": 7}

    pipe = build_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    put_in_cache(hub_cache, "me/tiny-pipeline", tmp_path / "pipe")
    transformer = MaskGitTransformer.from_pretrained("me/tiny-pipeline", subfolder="transformer")
    assert transformer.config == pipe.transformer.config
    loaded_pipe = TextToVideoPipeline.from_pretrained("me/tiny-pipeline")  # links into blobs/ are followed
    assert torch.equal(loaded_pipe("a red ball", generator=gen(0), output_type="latent").frames,
                       pipe("a red ball", generator=gen(0), output_type="latent").frames)


def test_a_local_folder_wins_and_missing_repos_fail_fast_naming_the_id(hub_cache, tmp_path, monkeypatch):
    tok = VideoTokenizer(preset_config("tiny"))
    monkeypatch.chdir(tmp_path)
    tok.save_pretrained(tmp_path / "me" / "tok")  # a folder spelled like a repo id
    assert isinstance(VideoTokenizer.from_pretrained("me/tok"), VideoTokenizer)
    start = time.monotonic()
    with pytest.raises(HubModelNotFoundError, match=r"'nobody/nothing' is not a local folder.*offline"):
        VideoTokenizer.from_pretrained("nobody/nothing")
    assert time.monotonic() - start < 5
    with pytest.raises(FileNotFoundError):
        TextToVideoPipeline.from_pretrained("nobody/nothing")
    with pytest.raises(FileNotFoundError, match="here does not exist"):
        VideoTokenizer.from_pretrained("./not/a/folder/here")


def test_a_cache_link_out_of_the_repo_is_refused(hub_cache, tmp_path):
    tok = VideoTokenizer(preset_config("tiny"))
    tok.save_pretrained(tmp_path / "tok")
    snapshot = put_in_cache(hub_cache, "me/evil", tmp_path / "tok")
    (snapshot / "model.safetensors").unlink()
    os.symlink(tmp_path / "tok" / "model.safetensors", snapshot / "model.safetensors")
    with pytest.raises(ValueError, match="links out of the repo's cache folder"):
        VideoTokenizer.from_pretrained("me/evil")


def test_push_to_hub_uploads_the_folder_and_a_model_card(hub_uploads, tmp_path):
    tok = VideoTokenizer(preset_config("tiny"))
    tok.save_pretrained(tmp_path / "tok", training={"num_frames": 5, "frame_stride": 2, "step": 40})
    tok = VideoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.push_to_hub("me/my-tokenizer", private=True, training={"psnr_db": 21.5}) == "commit-info"
    assert hub_uploads["create_repo"] == ("me/my-tokenizer", {"private": True, "exist_ok": True})
    up = hub_uploads["upload"]
    assert up["files"] == ["README.md", "config.json", "model.safetensors"]
    assert up["reloaded"] == {"num_frames": 5, "frame_stride": 2, "step": 40}  # the recorded training travels
    card = up["readme"]
    assert card.startswith("---\nlibrary_name: magvit2-maskgit\n")
    assert 'VideoTokenizer.from_pretrained("me/my-tokenizer")' in card.replace("'", '"')
    assert '"codebook_size"' in card and "| psnr_db | 21.5 |" in card and "| frame_stride | 2 |" in card
    assert not up["folder"].exists()  # the staging folder is gone after the upload

    pipe = build_pipeline()
    pipe.push_to_hub("me/my-pipeline", commit_message="first", training={"step": 20})
    up = hub_uploads["upload"]
    assert up["commit_message"] == "first"
    assert {"pipeline.json", "README.md", "tokenizer/config.json", "transformer/model.safetensors"} <= set(up["files"])
    assert "pipeline_tag: text-to-video" in up["readme"] and ".frames[0]" in up["readme"]
    pipe.transformer.push_to_hub("me/my-transformer")
    assert hub_uploads["upload"]["files"] == ["README.md", "config.json", "model.safetensors"]
    assert "Not recorded" in hub_uploads["upload"]["readme"]
    with pytest.raises(ValueError, match="owner/name"):
        pipe.push_to_hub("no-owner")


def test_cards_carry_license_base_model_datasets_install_sample_and_training(hub_uploads, tmp_path, hub_cache):
    """ModelCard + ModelCardData: metadata a Hub page shows (license, library, tags, base_model, datasets), the
    install line, a sample GIF, the training record and the text encoder by its Hub id; kept through
    save -> from_pretrained -> push_to_hub."""
    from huggingface_hub import ModelCard

    from maskgit.text import DEFAULT_TEXT_ENCODER_ID
    from trainers.data.video_write import write_gif

    tok = VideoTokenizer(preset_config("tiny"))
    tok.save_pretrained(tmp_path / "tok")
    put_in_cache(hub_cache, "me/base-tokenizer", tmp_path / "tok")
    pipe = build_pipeline()
    pipe.tokenizer = VideoTokenizer.from_pretrained("me/base-tokenizer")  # trained on a Hub tokenizer's codes
    sample = write_gif(tmp_path / "s.gif", np.zeros((3, 16, 16, 3), dtype=np.uint8), fps=4)
    folder = pipe.save_pretrained(tmp_path / "pipe", training={"step": 300, "val_loss": 2.5},
                                  model_card_kwargs={"sample": sample, "datasets": ["me/moving-digits"],
                                                     "license": "apache-2.0"})
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "magvit2-maskgit"
    assert card.data.base_model == ["me/base-tokenizer"] and card.data.datasets == ["me/moving-digits"]
    assert card.data.pipeline_tag == "text-to-video" and "text-to-video" in card.data.tags
    assert card.data.magvit2_training == {"step": 300, "val_loss": 2.5}
    assert "pip install 'magvit2-maskgit[text]'" in card.text and "![sample](sample.gif)" in card.text
    assert (folder / "sample.gif").read_bytes() == sample.read_bytes()
    assert "| val_loss | 2.5 |" in card.text

    loaded = TextToVideoPipeline.from_pretrained(folder)  # the card's metadata and sample travel with the folder
    loaded.push_to_hub("me/t2v", datasets="me/other-digits")
    up = hub_uploads["upload"]
    assert {"README.md", "sample.gif", "model_index.json", "pipeline.json"} <= set(up["files"])
    pushed = ModelCard(up["readme"])
    assert pushed.data.license == "apache-2.0" and pushed.data.datasets == ["me/other-digits"]
    assert pushed.data.base_model == ["me/base-tokenizer"] and pushed.data.magvit2_training["step"] == 300
    assert 'TextToVideoPipeline.from_pretrained("me/t2v")' in up["readme"].replace("'", '"')

    default = build_pipeline()
    default.text_encoder.spec = "default"  # how the bundled MiniLM names itself in pipeline.json
    default.save_pretrained(tmp_path / "default")
    index = (tmp_path / "default" / "model_index.json").read_text()
    assert DEFAULT_TEXT_ENCODER_ID in index
    assert f"[{DEFAULT_TEXT_ENCODER_ID}](https://huggingface.co/{DEFAULT_TEXT_ENCODER_ID})" in (
        tmp_path / "default" / "README.md").read_text()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my own notes")  # never replaced
    tok.save_pretrained(mine)
    assert (mine / "README.md").read_text() == "my own notes"
    with pytest.raises(ValueError, match="must be Hub ids"):
        tok.push_to_hub("me/x", base_model="runs/local/tokenizer/..")
