"""Decoder-only fine-tuning (`--decoder-only`, `TokenizerTrainConfig.decoder_only`): the weights that decide the codes
stay as loaded, the decoder trains, so every clip keeps its codes."""

from __future__ import annotations

import pytest
import torch

from magvit2 import VideoTokenizer, preset_config
from tests.helpers.commands import cli, one_line
from trainers.configs import TokenizerTrainConfig


def _split(tokenizer: VideoTokenizer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(encoder-side, decoder-side) weights by name."""
    encoder = {id(p) for p in tokenizer.encoder_parameters()}
    state = dict(tokenizer.named_parameters())
    return ({k: p.detach() for k, p in state.items() if id(p) in encoder},
            {k: p.detach() for k, p in state.items() if id(p) not in encoder})


@pytest.mark.parametrize("overrides", [{}, {"use_fsq": True, "fsq_levels": (4, 4, 4), "codebook_size": None}])
def test_encoder_parameters_are_what_decides_the_codes(overrides):
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(preset_config("tiny", **overrides)).eval()
    video = torch.rand(2, 3, 5, *tokenizer.config.image_size) * 2 - 1
    codes = tokenizer.tokenize(video)
    encoder, decoder = _split(tokenizer)
    assert encoder and decoder and not any(k.startswith("decoder") for k in encoder)
    assert any("project_in" in k for k in encoder) and any("project_out" in k for k in decoder)
    with torch.no_grad():
        for p in decoder.values():
            p.add_(torch.randn_like(p))  # any decoder change leaves the codes alone
    assert torch.equal(tokenizer.tokenize(video), codes)
    with torch.no_grad():
        for p in encoder.values():
            p.add_(torch.randn_like(p))
    assert not torch.equal(tokenizer.tokenize(video), codes)


def test_decoder_only_run_keeps_the_codes_and_trains_the_decoder(tmp_path, photo_clips, capsys):
    common = ["--data", photo_clips, "--preset", "tiny", "--batch-size", "2", "--num-frames", "5"]
    assert cli("scripts.train_tokenizer", [*common, "--out", tmp_path / "base", "--max-steps", "2"], capsys)[0] == 0
    code, err = cli("scripts.train_tokenizer", [*common, "--out", tmp_path / "dec", "--max-steps", "3",
                                                "--init-from", tmp_path / "base", "--decoder-only"], capsys)
    assert code == 0, err
    base = VideoTokenizer.from_pretrained(tmp_path / "base" / "tokenizer")
    tuned = VideoTokenizer.from_pretrained(tmp_path / "dec" / "tokenizer")
    (enc_a, dec_a), (enc_b, dec_b) = _split(base), _split(tuned)
    assert all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)  # the exported EMA weights: frozen ones unchanged
    assert max(float((dec_a[k] - dec_b[k]).abs().max()) for k in dec_a) > 1e-4  # the decoder trained
    video = torch.rand(1, 3, 5, *base.config.image_size) * 2 - 1
    assert torch.equal(base.tokenize(video), tuned.tokenize(video))
    assert "decoder_only: true" in (tmp_path / "dec" / "config.yaml").read_text()


def test_decoder_only_must_be_a_bool(tmp_path, capsys):
    with pytest.raises(ValueError, match="decoder_only must be true or false"):
        TokenizerTrainConfig(decoder_only="yes")
    bad = tmp_path / "bad.yaml"
    bad.write_text("decoder_only: 1\n")
    one_line(*cli("scripts.train_tokenizer", ["--data", tmp_path, "--out", tmp_path / "r", "--config", bad], capsys),
             "decoder_only must be true or false; got 1")


def test_help_names_the_flag():
    from scripts.train_tokenizer import build_parser
    assert "--decoder-only" in build_parser().format_help()
