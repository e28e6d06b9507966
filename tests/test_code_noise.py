"""Code noise in tokenizer training (`--code-noise`, `TokenizerTrainConfig.code_noise`, `trainers.code_noise`): a
share of the codes redrawn before decoding, drawn for the global batch, clean positions still training the encoder."""

from __future__ import annotations

import pytest
import torch

from magvit2 import VideoTokenizer, preset_config
from tests.helpers.commands import cli, one_line
from trainers.code_noise import noisy_codes, reconstruct_with_code_noise
from trainers.configs import TokenizerTrainConfig
from trainers.rng import make_generator


def test_noisy_codes_redraw_the_share_asked_and_leave_the_rest():
    codes = torch.randint(0, 1000, (64, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    noisy, hit = noisy_codes(codes, 0.2, 1000, make_generator(0, 1))
    assert hit.shape == codes.shape and hit.dtype == torch.bool
    assert abs(float(hit.float().mean()) - 0.2) < 0.015  # 12,288 draws: one standard error is 0.004
    assert torch.equal(noisy[~hit], codes[~hit])
    assert float((noisy[hit] != codes[hit]).float().mean()) > 0.99  # a draw equals its code 1 time in 1000
    assert int(noisy.min()) >= 0 and int(noisy.max()) < 1000
    again, _ = noisy_codes(codes, 0.2, 1000, make_generator(0, 1))
    assert torch.equal(again, noisy)  # from the generator alone
    same, none = noisy_codes(codes, 0.0, 1000, make_generator(0, 1))
    assert torch.equal(same, codes) and not none.any()


def test_each_process_takes_its_rows_of_one_global_draw():
    codes = torch.randint(0, 64, (4, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    whole, _ = noisy_codes(codes, 0.5, 64, make_generator(3, 7))
    halves = [noisy_codes(codes[i : i + 2], 0.5, 64, make_generator(3, 7), rows=(i, 4))[0] for i in (0, 2)]
    assert torch.equal(torch.cat(halves), whole)
    uneven = noisy_codes(codes[1:], 0.5, 64, make_generator(3, 7), rows=(1, 4))[0]  # one process loaded 3 of 4 rows
    assert torch.equal(uneven, whole[1:])


def test_a_share_of_clips_gets_the_noise_and_the_others_stay_clean():
    codes = torch.randint(0, 1000, (400, 3, 8, 8), generator=torch.Generator().manual_seed(2))
    _, hit = noisy_codes(codes, 0.2, 1000, make_generator(0, 2), clips=0.5)
    noisy_rows = hit.flatten(1).any(1)
    assert abs(float(noisy_rows.float().mean()) - 0.5) < 0.1  # 400 clips: one standard error is 0.025
    assert abs(float(hit[noisy_rows].float().mean()) - 0.2) < 0.02  # the share within a noisy clip
    halves = [noisy_codes(codes[i : i + 200], 0.2, 1000, make_generator(0, 2), rows=(i, 400), clips=0.5)[1]
              for i in (0, 200)]
    assert torch.equal(torch.cat(halves), hit)  # the clip draw is global too


@pytest.mark.parametrize("share, rows, clips, message", [
    (1.0, None, 1.0, r"in \[0, 1\) and its share of clips in \(0, 1\]; got 1.0, 1.0"), (-0.1, None, 1.0, "got -0.1"),
    (0.1, None, 0.0, "got 0.1, 0.0"), (0.1, (3, 4), 1.0, r"must hold this batch of 2; got \(3, 4\)")])
def test_bad_share_or_rows_is_refused(share, rows, clips, message):
    with pytest.raises(ValueError, match=message):
        noisy_codes(torch.zeros(2, 1, 2, 2, dtype=torch.long), share, 8, make_generator(0), rows, clips)


@pytest.mark.parametrize("overrides", [{}, {"use_fsq": True, "fsq_levels": (4, 4, 4), "codebook_size": None}])
def test_noise_reaches_the_decoder_and_clean_codes_still_train_the_encoder(overrides):
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(preset_config("tiny", **overrides)).train()  # straight-through values: training
    video = torch.rand(2, 3, 5, *tokenizer.config.image_size) * 2 - 1
    clean = tokenizer.reconstruct(video)
    same = reconstruct_with_code_noise(tokenizer, video, 0.0, make_generator(0))
    assert torch.allclose(same.recon, clean.recon, atol=1e-5) and torch.equal(same.codes, clean.codes)
    noisy = reconstruct_with_code_noise(tokenizer, video, 0.5, make_generator(0))
    assert torch.equal(noisy.codes, clean.codes)  # the clean codes are reported
    assert float((noisy.recon - clean.recon).detach().abs().max()) > 1e-3
    noisy.recon.square().mean().backward()
    grads = {n: p.grad for n, p in tokenizer.named_parameters() if any(p is q for q in tokenizer.encoder_parameters())}
    assert grads["conv_in.conv.weight"] is not None and float(grads["conv_in.conv.weight"].abs().max()) > 0


def test_code_noise_is_a_share(tmp_path, capsys):
    for bad in (1.0, -0.5, True, "0.2"):
        with pytest.raises(ValueError, match="code_noise must be a share in"):
            TokenizerTrainConfig(code_noise=bad)
    for bad in (0.0, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="code_noise_clips must be a share in"):
            TokenizerTrainConfig(code_noise_clips=bad)
    one_line(*cli("scripts.train_tokenizer", ["--data", tmp_path, "--out", tmp_path / "r", "--code-noise", "1.5"],
                  capsys), "code_noise must be a share in [0, 1); got 1.5")


def test_a_decoder_only_run_with_code_noise_records_it(tmp_path, photo_clips, capsys):
    common = ["--data", photo_clips, "--preset", "tiny", "--batch-size", "2", "--num-frames", "5"]
    assert cli("scripts.train_tokenizer", [*common, "--out", tmp_path / "base", "--max-steps", "2"], capsys)[0] == 0
    code, err = cli("scripts.train_tokenizer", [*common, "--out", tmp_path / "dec", "--max-steps", "2",
                                                "--init-from", tmp_path / "base", "--decoder-only",
                                                "--code-noise", "0.25", "--code-noise-clips", "0.5"], capsys)
    assert code == 0, err
    recorded = (tmp_path / "dec" / "config.yaml").read_text()
    assert "code_noise: 0.25" in recorded and "code_noise_clips: 0.5" in recorded
    from scripts.train_tokenizer import build_parser
    assert "--code-noise-clips" in build_parser().format_help()
