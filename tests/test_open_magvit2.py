"""Open-MAGVIT2's video tokenizer, converted exactly: against the reference outputs of their code at a tiny size
(tests/fixtures/open-magvit2-video-tiny: random weights under their key names, a 17-frame video and a 1-frame
image with their latents, quantized latents, little-endian code indices and reconstructions), strict conversion,
persistence, the `magvit2-convert` command, and stage two (tokenize -> MaskGit -> pipeline) on top of it."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from magvit2 import OpenMagvit2Config, OpenMagvit2Tokenizer, VideoTokenizer, open_magvit2_preset_config, preset_config
from magvit2.open_magvit2 import EMA_PREFIX, LittleEndianLFQuantizer
from magvit2.tokenizer import TokenizerOutput
from scripts.convert import main as convert_main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "open-magvit2-video-tiny"
TOL = 1e-5  # max abs error vs their outputs (measured: latents 2.4e-7, reconstructions 4.8e-6)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny convs on a shared 2-core runner: one thread is ~20x faster than contended ones."""


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "weights.safetensors"))


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "io.safetensors"))


@pytest.fixture(scope="module")
def config() -> OpenMagvit2Config:
    their = json.loads((FIXTURE / "config.json").read_text())
    return OpenMagvit2Config.from_ddconfig(their["ddconfig"], n_embed=their["n_embed"])


@pytest.fixture(scope="module")
def tokenizer(weights, config) -> OpenMagvit2Tokenizer:
    return OpenMagvit2Tokenizer.from_open_magvit2(weights, config)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


# exactness against their outputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["video", "image"])
def test_latents_codes_and_reconstructions_equal_the_reference(tokenizer, io, name):
    x = io[f"{name}.input"]  # (2, 3, 17 | 1, 32, 32) in [-1, 1]
    with torch.no_grad():
        latents = tokenizer.encode(x)
        q = tokenizer.quantize(latents)
        recon = tokenizer.decode(io[f"{name}.quantized"])
        out = tokenizer.reconstruct(x)
    assert max_err(latents, io[f"{name}.latent"]) < TOL
    assert torch.equal(q.quantized, io[f"{name}.quantized"])  # +-1, exactly their sign(latent)
    assert torch.equal(q.indices, io[f"{name}.indices"])  # little-endian: sum_i [latent_i > 0] 2^i
    assert torch.equal(tokenizer.tokenize(x), io[f"{name}.indices"])
    assert max_err(recon, io[f"{name}.recon"]) < TOL
    assert isinstance(out, TokenizerOutput) and torch.equal(out.codes, io[f"{name}.indices"])
    assert max_err(out.recon, io[f"{name}.recon"]) < TOL
    with torch.no_grad():
        from_codes = tokenizer.decode_from_code_indices(io[f"{name}.indices"])
        flat = tokenizer.decode_from_code_indices(io[f"{name}.indices"].flatten(1))  # (b, t'*h'*w')
    assert max_err(from_codes, io[f"{name}.recon"]) < TOL and torch.equal(flat, from_codes)


def test_images_as_4d_tensors_and_the_forward(tokenizer, io):
    image = io["image.input"][:, :, 0]  # (2, 3, 32, 32)
    with torch.no_grad():
        recon = tokenizer(image)
    assert recon.shape == image.shape and max_err(recon, io["image.recon"][:, :, 0]) < TOL
    assert torch.equal(tokenizer.tokenize(image), io["image.indices"])


def test_bit_order_is_little_endian_and_indices_to_codes_inverts_it(config):
    quantizer = LittleEndianLFQuantizer(config).eval()
    k = config.z_channels
    z = -torch.ones(1, k, k, 1, 1)  # latent position j: only channel j positive
    z[0, torch.arange(k), torch.arange(k)] = 1.0
    assert quantizer(z).indices.flatten().tolist() == [2**j for j in range(k)]
    indices = torch.randint(0, 2**k, (2, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    codes = quantizer.indices_to_codes(indices)  # (2, k, 3, 4, 4) of +-1
    assert torch.equal(codes.abs(), torch.ones_like(codes))
    assert torch.equal(((codes > 0).long() * (2 ** torch.arange(k))[:, None, None, None]).sum(1), indices)
    assert torch.equal(quantizer(codes).indices, indices)


def test_interface_that_trainers_and_the_pipeline_use(tokenizer):
    assert isinstance(tokenizer, VideoTokenizer)
    assert (tokenizer.time_compression, tokenizer.space_compression, tokenizer.codebook_size) == (4, 8, 2**18)
    assert tokenizer.latent_shape(17) == (5, 4, 4) and tokenizer.num_frames_for(5) == 17
    c = tokenizer.config
    assert c.image_size == (32, 32) and c.use_fsq is False and c.fsq_levels is None and not tokenizer.has_cond_layers
    assert c.to_dict()["architecture"] == "open_magvit2" and OpenMagvit2Config.from_dict(c.to_dict()) == c
    assert tokenizer.last_layer_weight.shape == (3, 32, 3, 3, 3)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        tokenizer.latent_shape(16)
    with pytest.raises(ValueError, match="cond"):
        tokenizer.encode(torch.zeros(1, 3, 1, 32, 32), cond=torch.zeros(1, 4))
    released = open_magvit2_preset_config("video")  # their released model: 17x128x128 -> 5x16x16 of 2^18
    assert (released.time_compression, released.space_compression, released.image_size) == (4, 8, (128, 128))
    assert open_magvit2_preset_config("video-tiny") == c
    with pytest.raises(ValueError, match="codebook_size must be 2 \\*\\* z_channels"):
        OpenMagvit2Config(z_channels=18, codebook_size=2**16)


# strict conversion ---------------------------------------------------------------------------------------------


def test_a_missing_or_mis_shaped_or_unknown_tensor_names_the_key(weights, config):
    key = "decoder.up.2.upsample.conv1.conv_1.weight"
    missing = {k: v for k, v in weights.items() if k != key}
    with pytest.raises(ValueError, match=f"missing.*{key}"):
        OpenMagvit2Tokenizer.from_open_magvit2(missing, config, source="ckpt")
    wrong = {**weights, key: weights[key][:128]}
    with pytest.raises(ValueError, match=f"key {key} has shape \\(128, 64, 3, 3, 3\\), this model expects "
                                         f"\\(512, 64, 3, 3, 3\\)"):
        OpenMagvit2Tokenizer.from_open_magvit2(wrong, config)
    extra = {**weights, "quantize.project_in.weight": torch.zeros(18, 18)}  # a learned projection is not ignored
    with pytest.raises(ValueError, match=r"unexpected.*quantize\.project_in\.weight"):
        OpenMagvit2Tokenizer.from_open_magvit2(extra, config)
    with pytest.raises(ValueError, match="no EMA weights"):
        OpenMagvit2Tokenizer.from_open_magvit2(weights, config, ema=True)
    with pytest.raises(ValueError, match=r"key epoch holds a non-tensor \(int\)"):
        OpenMagvit2Tokenizer.from_open_magvit2({**weights, "epoch": 3}, config)


# persistence ---------------------------------------------------------------------------------------------------


def test_save_and_from_pretrained_round_trip_to_the_same_class_and_outputs(tokenizer, io, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    payload = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert payload["_kind"] == "VideoTokenizer" and payload["config"]["architecture"] == "open_magvit2"
    loaded = VideoTokenizer.from_pretrained(tmp_path / "tok")
    assert type(loaded) is OpenMagvit2Tokenizer and loaded.config == tokenizer.config
    with torch.no_grad():
        assert torch.equal(loaded(io["video.input"]), tokenizer(io["video.input"]))
    assert torch.equal(loaded.tokenize(io["video.input"]), io["video.indices"])
    assert type(OpenMagvit2Tokenizer.from_pretrained(tmp_path / "tok")) is OpenMagvit2Tokenizer
    VideoTokenizer(preset_config("tiny")).save_pretrained(tmp_path / "ours")  # our own architecture
    assert type(VideoTokenizer.from_pretrained(tmp_path / "ours")) is VideoTokenizer
    with pytest.raises(ValueError, match="holds a VideoTokenizer, not a OpenMagvit2Tokenizer"):
        OpenMagvit2Tokenizer.from_pretrained(tmp_path / "ours")
    payload["config"]["architecture"] = "someone_elses"
    (tmp_path / "tok" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="unknown tokenizer architecture 'someone_elses'"):
        VideoTokenizer.from_pretrained(tmp_path / "tok")


# the converter command -----------------------------------------------------------------------------------------


def lightning_checkpoint(weights: dict[str, torch.Tensor], path: Path) -> Path:
    """What their training writes: `state_dict` with the model, the GAN loss and EMA copies (names without dots;
    here the weights halved, so the test can tell them apart), plus trainer bookkeeping."""
    ema = {EMA_PREFIX + k.replace(".", ""): v * 0.5 for k, v in weights.items()}
    state = {**weights, **ema, "model_ema.num_updates": torch.tensor(1000), "model_ema.decay": torch.tensor(0.999),
             "loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4), "loss.logvar": torch.zeros(())}
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "2.2.1",
                "optimizer_states": [], "lr_schedulers": []}, path)
    return path


def test_convert_command_writes_a_folder_every_command_loads(weights, io, tmp_path, capsys):
    ckpt = lightning_checkpoint(weights, tmp_path / "video_tiny.ckpt")
    assert convert_main(["open-magvit2", str(ckpt), str(tmp_path / "tok"), "--preset", "video-tiny"]) == 0
    assert "5x4x4 codes" in capsys.readouterr().out
    tok = VideoTokenizer.from_pretrained(tmp_path / "tok")
    assert isinstance(tok, OpenMagvit2Tokenizer) and torch.equal(tok.tokenize(io["video.input"]), io["video.indices"])
    assert convert_main(["open-magvit2", str(ckpt), str(tmp_path / "ema"), "--ema", "--config",
                         str(FIXTURE / "config.json")]) == 0
    ema = VideoTokenizer.from_pretrained(tmp_path / "ema").state_dict()
    assert all(torch.equal(ema[k], v * 0.5) for k, v in weights.items())
    save_file(weights, str(tmp_path / "weights.safetensors"))
    ours = tmp_path / "ours.json"  # our own config fields also work as --config
    ours.write_text(json.dumps(open_magvit2_preset_config("video-tiny").to_dict()))
    assert convert_main(["open-magvit2", str(tmp_path / "weights.safetensors"), str(tmp_path / "st"),
                         "--config", str(ours)]) == 0
    assert torch.equal(VideoTokenizer.from_pretrained(tmp_path / "st").state_dict()[
        "decoder.conv_out.conv_1.weight"], weights["decoder.conv_out.conv_1.weight"])


def bad_checkpoints(weights: dict[str, torch.Tensor], tmp: Path) -> list[tuple[Path, list[str], str]]:
    (tmp / "notes.ckpt").write_text("not a checkpoint")
    torch.save({"state_dict": weights, "hyper_parameters": argparse.Namespace(lr=1e-4)}, tmp / "pickled.ckpt")
    key = "encoder.conv_in.conv_1.weight"
    torch.save({"state_dict": {k: v for k, v in weights.items() if k != key}}, tmp / "missing.ckpt")
    tiny = ["--preset", "video-tiny"]
    return [(tmp / "notes.ckpt", tiny, "not a torch checkpoint"),
            (tmp / "pickled.ckpt", tiny, "weights_only=True\\) refused.*argparse.Namespace"),
            (tmp / "missing.ckpt", tiny, f"missing \\['{key}'\\]"),
            (tmp / "missing.ckpt", [], re.escape("beta.bias has shape (64,), this model expects (256,)")),  # default
            (tmp / "absent.ckpt", tiny, "checkpoint not found")]


def test_convert_command_exits_2_with_one_line_on_bad_input(weights, tmp_path, capsys):
    for path, flags, message in bad_checkpoints(weights, tmp_path):
        code = convert_main(["open-magvit2", str(path), str(tmp_path / "out"), *flags])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, (path, err)
        assert err.startswith("magvit2-convert: error:")
        assert re.search(message, err), (message, err)
        assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    ckpt = lightning_checkpoint(weights, tmp_path / "ok.ckpt")
    assert convert_main(["open-magvit2", str(ckpt), str(tmp_path / "out"), "--preset", "video-tiny"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["open-magvit2", str(ckpt), str(tmp_path / "x"), "--preset", "video-tiny", "--config", "c.json"])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


# stage two on top ----------------------------------------------------------------------------------------------


def test_maskgit_trains_on_open_magvit2_codes_and_the_pipeline_generates(tokenizer, tmp_path):
    """tokenize a folder with the converted tokenizer (2^18 codes) -> a few MaskGit steps (two 512-way heads) ->
    the exported pipeline generates a video of the right shape."""
    from maskgit import TextToVideoPipeline
    from tests.helpers.media import pan_frames
    from tests.helpers.training import maskgit_config
    from trainers.commands.tokenize_folder import tokenize_folder
    from trainers.data.codes import CodeShardDataset
    from trainers.data.video_io import write_video
    from trainers.maskgit_trainer import MaskGitTrainer

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    clips = tmp_path / "clips"
    clips.mkdir()
    lines = []
    for photo, caption in (("astronaut", "an astronaut"), ("coffee", "a cup of coffee"), ("chelsea", "a cat")):
        write_video(clips / f"{photo}.mp4", pan_frames(9, (32, 32), photo), lossless=True)
        lines.append(json.dumps({"file_name": f"{photo}.mp4", "text": caption}) + "\n")
    (clips / "metadata.jsonl").write_text("".join(lines))
    index = tokenize_folder(tmp_path / "tokenizer", clips, tmp_path / "codes", num_frames=9, device="cpu")
    assert index["codebook_size"] == 2**18 and index["latent_shape"] == [3, 4, 4] and index["num_clips"] == 3
    codes = CodeShardDataset(tmp_path / "codes").codes  # (3, 3, 4, 4)
    assert codes.shape == (3, 3, 4, 4) and int(codes.min()) >= 0 and int(codes.max()) < 2**18

    cfg = maskgit_config("--max-steps", "3", "--batch-size", "3", data={"val_fraction": 0.0},
                         run={"val_every": 1000, "checkpoint_every": 1000})
    trainer = MaskGitTrainer(cfg, tmp_path / "tokenizer", tmp_path / "run", codes_dir=tmp_path / "codes")
    assert trainer.model_config.codebook_size == 2**18 and trainer.model_config.vocab_sizes == (512, 512)
    trainer.fit()
    assert trainer.step == 3

    pipe = TextToVideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert isinstance(pipe.tokenizer, OpenMagvit2Tokenizer)
    video = pipe(["a cat"], generator=torch.Generator().manual_seed(0), num_inference_steps=2,
                 output_type="pt").frames
    assert video.shape == (1, 3, 9, 32, 32) and bool(torch.isfinite(video).all())
    latent = pipe(["a cat"], generator=torch.Generator().manual_seed(0), num_inference_steps=2,
                  output_type="latent").frames
    assert latent.shape == (1, 3, 4, 4) and int(latent.max()) < 2**18


def test_a_converted_tokenizer_fine_tunes_with_init_from(tokenizer, tmp_path):
    """magvit2-train-tokenizer --init-from a converted folder: the architecture comes from there (GAN on)."""
    from tests.helpers.media import pan_frames
    from tests.helpers.training import tokenizer_config
    from trainers.data.video_io import write_video
    from trainers.tokenizer_trainer import TokenizerTrainer

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    clips = tmp_path / "clips"
    clips.mkdir()
    for photo in ("astronaut", "coffee", "chelsea", "rocket"):
        write_video(clips / f"{photo}.mp4", pan_frames(9, (32, 32), photo), lossless=True)
    cfg = tokenizer_config("--max-steps", "3", "--batch-size", "2")
    trainer = TokenizerTrainer(cfg, [clips], tmp_path / "run", init_from=tmp_path / "tokenizer")
    assert isinstance(trainer.tokenizer, OpenMagvit2Tokenizer)
    assert trainer.fit()["step"] == 3
    tuned = VideoTokenizer.from_pretrained(tmp_path / "run" / "tokenizer")
    assert isinstance(tuned, OpenMagvit2Tokenizer)
    assert any(not torch.equal(v, tokenizer.state_dict()[k]) for k, v in tuned.state_dict().items())
