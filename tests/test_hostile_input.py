"""Hostile input and faults (issue 13): a user's files are never overwritten, nothing hangs, every malformed
artefact or config is one clear line (exit 2) naming the file and the key, nonsense is refused, paths stay inside
their folders, and staging folders of killed saves are cleaned up. Everything is generated in tmp_path; seconds.
Property-based tests of the same parsers: tests/test_hostile_properties.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from magvit2 import VideoTokenizer, preset_config
from magvit2.serialization import atomic_dir
from maskgit.text import build_text_encoder
from tests.helpers.artefacts import rewrite, saved_checkpoint
from tests.helpers.commands import cli, one_line
from tests.helpers.models import build_pipeline
from trainers import checkpointing as ckpt
from trainers.base import Trainer
from trainers.configs import build_config
from trainers.data import folders
from trainers.data.batches import build_dataloader
from trainers.data.captions import read_prompt_file
from trainers.data.codes import CodeShardDataset, CodeShardWriter
from trainers.data.folders import DataQualityError, VideoFolderDataset, load_captions, scan_media_files
from trainers.data.samples import collate
from trainers.data.video_io import VideoReadError
from trainers.run_setup import prepare_run_dir


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return VideoTokenizer(preset_config("tiny")).save_pretrained(tmp_path_factory.mktemp("m") / "tok")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------------- never overwrite a file


def test_reconstruct_never_writes_over_an_input_or_earlier_outputs(tok, photo_clips, capsys):
    clip = photo_clips / "coffee.mp4"
    before = clip.read_bytes()
    for extra in ([], ["--overwrite"]):  # an input is never an output, even with --overwrite
        code, err = cli("scripts.reconstruct", ["--tokenizer", tok, clip, "--out-dir", photo_clips, *extra], capsys)
        one_line(code, err, str(clip), "input")
        assert clip.read_bytes() == before
    out = photo_clips.parent / "out"
    out.mkdir()
    (out / "metrics.json").write_text("my notes")
    code, err = cli("scripts.reconstruct", ["--tokenizer", tok, clip, "--out-dir", out], capsys)
    one_line(code, err, "metrics.json", "--overwrite")
    assert (out / "metrics.json").read_text() == "my notes" and not (out / "coffee.mp4").exists()
    assert cli("scripts.reconstruct", ["--tokenizer", tok, clip, "--out-dir", out, "--overwrite"], capsys)[0] == 0


def test_reconstruct_gives_same_named_inputs_distinct_outputs(tok, make_clip, tmp_path, capsys):
    a = make_clip("x/clip.mp4", num_frames=5, size=(16, 16), photo="coffee")
    b = make_clip("y/clip.mp4", num_frames=5, size=(16, 16), photo="rocket")
    assert cli("scripts.reconstruct", ["--tokenizer", tok, a, b, "--out-dir", tmp_path / "o"], capsys)[0] == 0
    outputs = [c["output"] for c in json.loads((tmp_path / "o" / "metrics.json").read_text())["clips"]]
    assert outputs == ["clip.mp4", "clip-2.mp4"] and all((tmp_path / "o" / o).is_file() for o in outputs)


def test_a_run_folder_is_reused_only_when_ours_or_resumed(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    for name in ("config.yaml", "summary.json", "metrics.jsonl"):
        (user / name).write_text("the user's own file")
    with pytest.raises(FileExistsError, match="not a run folder of ours"):
        prepare_run_dir(user, None, is_main=True)
    code, err = cli("scripts.train_tokenizer", ["--data", tmp_path / "nodata", "--out", user], capsys)
    one_line(code, err, str(user), "--resume")
    assert all((user / n).read_text() == "the user's own file" for n in ("config.yaml", "summary.json",
                                                                        "metrics.jsonl"))
    prepare_run_dir(user, "latest", is_main=True)  # --resume: the user says it is a run folder
    ours = prepare_run_dir(tmp_path / "new", None, is_main=True)
    (ours / "config.yaml").write_text("ours")
    assert prepare_run_dir(ours, None, is_main=True) == ours  # one of ours (its marker): reused


def test_tokenize_never_writes_into_a_folder_holding_shards(tmp_path):
    out = tmp_path / "codes"
    out.mkdir()
    (out / "codes-00000.safetensors").write_bytes(b"earlier shard")
    with pytest.raises(FileExistsError, match=r"codes-00000\.safetensors"):
        CodeShardWriter(out)
    assert (out / "codes-00000.safetensors").read_bytes() == b"earlier shard"


# ----------------------------------------------------------------------------------------------------- no hangs


@pytest.mark.timeout(60)
def test_scan_never_follows_a_symlink_back_into_a_visited_folder(tmp_path, caplog):
    for i in range(6):
        (tmp_path / f"f{i}.png").write_bytes(b"x")
    (tmp_path / "loop1").symlink_to(".")
    assert scan_media_files(tmp_path) == [f"f{i}.png" for i in range(6)]  # each file once, however deep the loop
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop2").symlink_to("..")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert len(scan_media_files(tmp_path)) == 6
    assert sum("symlinked folder" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture
def fails_at_load(monkeypatch):
    """Every clip passes the probe but fails to decode (a header that promises more frames than the file holds)."""
    calls: dict[str, int] = {}

    def read_clip(path, *args, **kwargs):
        calls[Path(path).name] = calls.get(Path(path).name, 0) + 1
        raise VideoReadError(path, "decoding failed after 2 frames (the header promised 5)")

    monkeypatch.setattr(folders, "read_clip", read_clip)
    return calls


@pytest.mark.timeout(60)
def test_failing_samples_are_given_up_and_the_loop_stops(photo_clips, fails_at_load):
    ds = VideoFolderDataset(photo_clips, num_frames=5, image_size=16, max_bad_fraction=1.0)
    loader = build_dataloader(ds, batch_size=2, seed=0)
    for _ in range(5):
        for batch in loader:
            ds.record_skipped(batch)
    assert max(fails_at_load.values()) <= 3 and sorted(ds.stats.given_up) == sorted(ds.paths)
    with pytest.raises(DataQualityError, match="no loadable clips"):
        next(Trainer.batches(SimpleNamespace(loader=loader, train_set=ds, rank=0,
                                             _agree_on_batch=lambda bad, rows: (bad, [rows]))))  # raised: the loop ends


def test_load_time_failures_count_towards_max_bad_fraction(photo_clips, fails_at_load):
    ds = VideoFolderDataset(photo_clips, num_frames=5, image_size=16, max_bad_fraction=0.3)
    batch = collate([ds[(0, i, 0)] for i in range(2)])
    with pytest.raises(DataQualityError, match=r"2 of 4 files.*at load time"):
        ds.record_skipped(batch)


def test_tokenize_that_writes_no_clip_exits_2(tok, photo_clips, tmp_path, fails_at_load, capsys):
    code, err = cli("scripts.tokenize_videos", ["--tokenizer", tok, "--data", photo_clips, "--out", tmp_path / "c",
                                                "--num-frames", 5, "--max-bad-fraction", 1], capsys)
    one_line(code, err, "0 clips")
    assert not (tmp_path / "c" / "index.json").exists()


# ------------------------------------------------------------------------------- one clear line for bad artefacts


@pytest.mark.parametrize("change, match", [
    (lambda m: m.update(files={}), "must list"),
    (lambda m: m["files"]["model.safetensors"].pop("size"), "needs an int 'size'"),
    (lambda m: m.update(files=[1]), "must list"),
    (lambda m: m["files"].update({"../outside.bin": {"size": 1, "sha256": ckpt.hashlib.sha256(b"x").hexdigest()}}),
     "not a plain file name"),
])
def test_malformed_checkpoint_markers_are_named(tmp_path, change, match):
    manager = saved_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "outside.bin").write_bytes(b"x")
    rewrite(manager.latest() / "COMPLETE.json", change)
    with pytest.raises(ckpt.CheckpointCorruptError, match=f"COMPLETE.json.*{match}"):
        manager.load("latest")


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("sampler"), "'sampler' must be"),
    (lambda s: s.update(step=-7), "'step' must be the int 3"),
    (lambda s: s.update(guard=[]), "'guard' must be"),
])
def test_malformed_trainer_state_is_named(tmp_path, change, match):
    manager = saved_checkpoint(tmp_path)
    path = manager.latest()
    state = json.loads((path / "state.json").read_text())
    change(state)
    data = json.dumps(state).encode()
    (path / "state.json").write_bytes(data)
    rewrite(path / "COMPLETE.json", lambda m: m["files"].update({"state.json": {
        "size": len(data), "sha256": ckpt.hashlib.sha256(data).hexdigest()}}))
    with pytest.raises(ckpt.CheckpointCorruptError, match=f"state.json.*{match}"):
        manager.load("latest")


@pytest.mark.parametrize("text, key", [
    ("run: {max_steps: abc}", "run.max_steps"), ("gen_optim: {betas: 5}", "gen_optim.betas"),
    ("run: {seed: 1.5}", "run.seed"), ("tokenizer: {init_dimm: 8}", "init_dimm"),
    ("run: {max_steps: .nan}", "run.max_steps"), ("run: {max_minutes: .inf}", "run.max_minutes"),
    ("run: 5", "run must be a mapping"), ("data: [1, 2]", "data must be a mapping"),
    ('data: {hflip: "false"}', "data.hflip"), (f"run: {{seed: {2**70}}}", "run.seed"),
    ("tokenizer: {layers: 5}", "tokenizer.layers"),
])
def test_yaml_values_of_the_wrong_type_name_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=r"bad\.yaml") as err:
        build_config("tokenizer", "tiny", path)
    assert key in str(err.value)


def test_training_cli_maps_a_bad_config_to_exit_2(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("run: {max_steps: abc}\n")
    code, err = cli("scripts.train_tokenizer", ["--data", tmp_path, "--out", tmp_path / "r", "--config",
                                                tmp_path / "c.yaml"], capsys)
    one_line(code, err, "c.yaml", "run.max_steps")


def test_model_folder_with_wrong_types_or_nan_weights_is_refused(tok, tmp_path, capsys):
    bad = tmp_path / "tok"
    bad.mkdir()
    config = json.loads((tok / "config.json").read_text())
    config["config"]["layers"] = 5
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").write_bytes((tok / "model.safetensors").read_bytes())
    code, err = cli("scripts.reconstruct", ["--tokenizer", bad, tok / "config.json", "--out-dir", tmp_path / "o"],
                    capsys)
    one_line(code, err, "layers")
    nan = tmp_path / "nan"
    model = VideoTokenizer.from_pretrained(tok)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    model.save_pretrained(nan)
    with pytest.raises(ValueError, match=r"model\.safetensors: non-finite weights in .*nan="):
        VideoTokenizer.from_pretrained(nan)


def codes_folder(root: Path, index_change=None, codes: torch.Tensor | None = None) -> Path:
    writer = CodeShardWriter(root)
    for i in range(2):
        writer.add(torch.zeros(3, 8, 8, dtype=torch.long), f"caption {i}", f"clip{i}.mp4")
    writer.close({"codebook_size": 64, "num_frames": 5, "latent_shape": [3, 8, 8]})
    if codes is not None:
        save_file({"codes": codes}, str(root / "codes-00000.safetensors"))
    if index_change is not None:
        rewrite(root / "index.json", index_change)
    return root


@pytest.mark.parametrize("index_change, codes, match", [
    (lambda i: i.pop("shards"), None, "'shards' must be"),
    (lambda i: i["shards"][0].update(file="../x.safetensors"), None, "each shard must be"),
    (None, torch.zeros(2, 3, 8, dtype=torch.int32), r"shape \(2, 3, 8, 8\)"),
    (None, torch.full((2, 3, 8, 8), 99, dtype=torch.int32), r"lie in \[0, 64\)"),
])
def test_malformed_code_shards_are_named(tmp_path, index_change, codes, match):
    folder = codes_folder(tmp_path / "codes", index_change, codes)
    with pytest.raises(ValueError, match=match):
        CodeShardDataset(folder)


def test_text_encoder_spec_asking_for_huge_widths_is_refused():
    with pytest.raises(ValueError, match="tiny:<dim>"):
        build_text_encoder(f"tiny:{10**11}")


# ----------------------------------------------------------------------------- metadata.jsonl and text encodings


@pytest.mark.parametrize("lines, match", [
    ([{"file_name": 7, "text": "x"}], "file_name must be a non-empty string"),
    ([{"file_name": "a.mp4", "text": {"en": "a cat"}}], "text must be a string"),
    ([{"file_name": "a.mp4", "text": "one"}, {"file_name": "./a.mp4", "text": "two"}], "already has a caption"),
    ([{"file_name": "../a.mp4", "text": "x"}], "outside the dataset folder"),
    ([{"file_name": "/etc/a.mp4", "text": "x"}], "outside the dataset folder"),
])
def test_bad_metadata_lines_are_refused_with_file_and_line(tmp_path, lines, match):
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match=rf"metadata\.jsonl:{len(lines)}: .*{match}"):
        load_captions(tmp_path, ["a.mp4"])


def test_non_utf8_files_are_named(tmp_path):
    for name in ("metadata.jsonl", "prompts.txt", "c.yaml"):
        (tmp_path / name).write_bytes(b'{"file_name": "a.mp4", "text": "caf\xff"}\n')
    with pytest.raises(ValueError, match=r"metadata\.jsonl.*not UTF-8"):
        load_captions(tmp_path, ["a.mp4"])
    with pytest.raises(ValueError, match=r"prompts\.txt.*not UTF-8"):
        read_prompt_file(tmp_path / "prompts.txt")
    with pytest.raises(ValueError, match=r"c\.yaml.*not UTF-8"):
        build_config("tokenizer", "tiny", tmp_path / "c.yaml")


def test_a_non_utf8_file_name_skips_that_file_only(photo_clips):
    good = (photo_clips / "coffee.mp4").read_bytes()
    fd = os.open(os.fsencode(photo_clips) + b"/bad\xff.mp4", os.O_WRONLY | os.O_CREAT)
    os.write(fd, good)
    os.close(fd)
    ds = VideoFolderDataset(photo_clips, num_frames=5, image_size=16)
    assert len(ds) == 4 and all("bad" not in p for p in ds.paths)


# ----------------------------------------------------------------------------------- paths stay inside folders


@pytest.fixture
def pipeline_dir(tmp_path) -> Path:
    return build_pipeline().save_pretrained(tmp_path / "pipe")


def test_pipeline_text_encoder_outside_the_folder_is_refused(pipeline_dir, tmp_path):
    from maskgit import TextToVideoPipeline

    outside = tmp_path / "enc"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    rewrite(pipeline_dir / "pipeline.json", lambda p: p["text_encoder"].update(spec=str(outside)))
    with pytest.raises(ValueError, match="outside the pipeline folder"):
        TextToVideoPipeline.from_pretrained(pipeline_dir)


def test_symlinked_component_leading_out_of_a_pipeline_is_refused(pipeline_dir, tmp_path):
    from maskgit import TextToVideoPipeline

    (pipeline_dir / "tokenizer").rename(tmp_path / "elsewhere")
    (pipeline_dir / "tokenizer").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="leads out of the pipeline folder"):
        TextToVideoPipeline.from_pretrained(pipeline_dir)
    assert TextToVideoPipeline.from_pretrained(pipeline_dir, allow_outside_paths=True).tokenizer is not None


def test_text_encoder_weights_are_never_unpickled_by_default(tmp_path, monkeypatch):
    from maskgit.text_hf import HFTextEncoder, TextEncoderNotFoundError

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a pickle")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(TextEncoderNotFoundError, match="pickle"):
        HFTextEncoder(str(tmp_path))


# ------------------------------------------------------------------------------------- stale staging folders


def test_staging_folders_of_killed_saves_are_removed_on_the_next_start(tmp_path):
    run = prepare_run_dir(tmp_path / "run", None, is_main=True)
    pid = dead_pid()
    stale = [run / f"tokenizer.tmp-{pid}", run / f"pipeline.old-{pid}"]
    alive, user = run / f"tokenizer.tmp-{os.getppid()}", run / "notes.tmp-draft"
    for folder in (*stale, alive, user):
        folder.mkdir()
    prepare_run_dir(run, None, is_main=True)
    assert not any(p.exists() for p in stale) and alive.is_dir() and user.is_dir()
    (run / f"tokenizer.tmp-{pid}").mkdir()
    atomic_dir(lambda d: (d / "config.json").write_text("{}"), run / "tokenizer")
    assert not (run / f"tokenizer.tmp-{pid}").exists()
