"""`magvit2-generate` end to end on a tiny saved pipeline (in-process `main(argv)`; one subprocess check)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magvit2.pixels import to_uint8
from maskgit import MaskGitTransformer
from scripts.generate import main
from tests.helpers.media import pan_frames
from tests.helpers.models import build_pipeline, tiny_maskgit_config
from trainers.commands.generate import slugify
from trainers.data.video_io import read_video, write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A MaskGit run folder whose pipeline/ holds a tiny pipeline (3 steps, 5 frames of 16x16)."""
    run = tmp_path_factory.mktemp("run")
    build_pipeline(num_inference_steps=3, num_frames=5, fps=8).save_pretrained(run / "pipeline")
    return run


def generate(*args, out: Path) -> int:
    return main([*map(str, args), "--out-dir", str(out), "--device", "cpu"])


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def expect_user_error(capsys, argv, match: str) -> None:
    try:
        code = main([*map(str, argv), "--device", "cpu"])
    except SystemExit as e:  # argparse's own errors (bad choices, bad types) exit from parse_args
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("magvit2-generate: error:") and match in err, err


def test_writes_one_mp4_per_prompt_and_a_log(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert generate("--model", run_dir, "--prompt", "A red ball, bouncing!", "--prompt", "clouds", out=out) == 0
    files = sorted(p.name for p in out.glob("*.mp4"))
    assert files == ["000-a-red-ball-bouncing.mp4", "001-clouds.mp4"]
    assert capsys.readouterr().out.split() == [str(out / f) for f in files]
    for f in files:
        assert read_video(out / f).shape == (5, 16, 16, 3)
    lines = log_lines(out)
    assert [line["file"] for line in lines] == files and [line["prompt"] for line in lines] == ["A red ball, bouncing!",
                                                                                                 "clouds"]
    first = lines[0]
    assert (first["seed"], lines[1]["seed"], first["base_seed"], first["prompt_index"]) == (0, 1, 0, 0)
    assert {k: first[k] for k in ("num_frames", "steps", "guidance_scale", "temperature", "choice_temperature",
                                  "top_k", "format", "fps", "negative_prompt", "prime_video")} == {
        "num_frames": 5, "steps": 3, "guidance_scale": 3.0, "temperature": 1.0, "choice_temperature": 4.5,
        "top_k": None, "format": "mp4", "fps": 8, "negative_prompt": None, "prime_video": None}
    assert first["model"] == str(run_dir / "pipeline")

    # a second run into the same folder continues the numbering and appends to the log
    assert generate("--model", run_dir / "pipeline", "--prompt", "clouds", "--steps", "2", "--num-frames", "3",
                    "--top-k", "5", out=out) == 0
    assert (out / "002-clouds.mp4").is_file() and read_video(out / "002-clouds.mp4").shape[0] == 3
    last = log_lines(out)[-1]
    assert (last["steps"], last["num_frames"], last["top_k"]) == (2, 3, 5)


def test_gif_prompt_file_and_settings(run_dir, tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a red ball\n\n  clouds over a hill  \n", encoding="utf-8")
    out = tmp_path / "gifs"
    assert generate("--model", run_dir, "--prompt-file", prompt_file, "--format", "gif", "--fps", "5",
                    "--guidance-scale", "1.5", "--temperature", "0.5", "--choice-temperature", "2",
                    "--negative-prompt", "noise", "--seed", "9", "--unmask-order", "frame", "--refine-steps", "2",
                    "--refine-ratio", "0.5", "--refine-unit", "frame", "--refine-temperature", "0", "--best-of", "2",
                    "--refine-guidance-scale", "1", out=out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000-a-red-ball.gif", "001-clouds-over-a-hill.gif",
                                                     "samples.jsonl"]
    assert read_video(out / "001-clouds-over-a-hill.gif").shape == (5, 16, 16, 3)
    line = log_lines(out)[1]
    assert (line["prompt"], line["format"], line["fps"], line["guidance_scale"], line["temperature"],
            line["choice_temperature"], line["negative_prompt"], line["base_seed"], line["unmask_order"],
            line["refine_steps"], line["refine_ratio"], line["refine_unit"], line["refine_temperature"],
            line["best_of"], line["refine_guidance_scale"]) == ("clouds over a hill", "gif", 5.0, 1.5, 0.5, 2.0,
                                                               "noise", 9, "frame", 2, 0.5, "frame", 0.0, 2, 1.0)


def test_same_seed_same_frames_and_each_prompt_reproduces_alone(run_dir, tmp_path):
    def frames(name: str, *args) -> list[np.ndarray]:
        out = tmp_path / name
        assert generate("--model", run_dir, *args, out=out) == 0
        return [read_video(out / line["file"]) for line in log_lines(out)]

    a = frames("a", "--prompt", "a red ball", "clouds", "--seed", "3")
    b = frames("b", "--prompt", "a red ball", "--prompt", "clouds", "--seed", "3")
    c = frames("c", "--prompt", "a red ball", "clouds", "--seed", "4")
    d = frames("d", "--prompt", "a red ball", "--seed", "3")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert np.array_equal(a[0], d[0])


def test_halton_order_reproduces_keeps_primes_and_spans_windows(run_dir, tmp_path):
    clip = tmp_path / "prime.mp4"
    write_video(clip, pan_frames(7, (24, 32)), lossless=True)
    videos = []
    for name in ("h1", "h2"):  # a primed video and one longer than the grid (sliding windows), twice
        out = tmp_path / name
        assert generate("--model", run_dir, "--prompt", "pan on", "--prime-video", clip, "--unmask-order", "halton",
                        "--seed", "5", out=out) == 0
        assert generate("--model", run_dir, "--prompt", "long", "--num-frames", "9", "--unmask-order", "halton",
                        "--seed", "5", out=out) == 0
        lines = log_lines(out)
        assert [line["unmask_order"] for line in lines] == ["halton", "halton"] and lines[0]["prime_frames"] == 3
        videos.append([read_video(out / line["file"]) for line in lines])
    assert videos[1][1].shape == (9, 16, 16, 3)
    assert all(np.array_equal(x, y) for x, y in zip(*videos))  # the order comes from the seed alone


def test_prime_video_and_image(run_dir, tmp_path):
    clip = tmp_path / "prime.mp4"
    write_video(clip, pan_frames(7, (24, 32)), lossless=True)
    out = tmp_path / "primed"
    assert generate("--model", run_dir, "--prompt", "pan on", "--prime-video", clip, out=out) == 0
    line = log_lines(out)[0]
    assert line["prime_frames"] == 3 and line["prime_video"] == str(clip)  # 1 + 2j <= 5 - 2 frames: 3
    assert read_video(out / line["file"]).shape == (5, 16, 16, 3)

    from PIL import Image

    image = tmp_path / "first.png"
    Image.fromarray(pan_frames(1, (20, 20))[0]).save(image)
    assert generate("--model", run_dir, "--prompt", "from a still", "--prime-video", image, out=out) == 0
    assert log_lines(out)[-1]["prime_frames"] == 1


def test_user_errors_exit_2_with_one_line(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    cases = [
        (["--model", run_dir], "no prompts"),
        (["--model", run_dir, "--prompt", "a", "--num-frames", "4"], "num_frames=4 is not 1 + 2k; try 3 or 5"),
        (["--model", run_dir, "--prompt", "a", "--guidance-scale", "-1"], "expected a finite number >= 0"),
        (["--model", run_dir, "--prompt", "a", "--prime-frames", "3"], "--prime-frames needs --prime-video"),
        (["--model", run_dir, "--prompt", "a", "--seed", "-1"], "expected an integer in [0, 2**63)"),
        (["--model", run_dir, "--prompt", "a", "--num-frames", "9", "--window-overlap", "3"],
         "window_overlap must be an int in [1, 2]"),
        (["--model", tmp_path / "missing", "--prompt", "a"], f"--model {tmp_path / 'missing'} does not exist"),
        (["--model", tmp_path, "--prompt", "a"], "is not a text-to-video pipeline: no pipeline.json naming"),
        (["--model", "nobody/nothing", "--prompt", "a"], "hf download nobody/nothing"),
        (["--model", run_dir, "--prompt-file", empty], "holds no prompts"),
        (["--model", run_dir, "--prompt-file", tmp_path / "nope.txt"], "no such file"),
        (["--model", run_dir, "--prompt", "a", "--prime-video", broken], "--prime-video"),
        (["--model", run_dir, "--prompt", "a", "--prime-video", tmp_path / "nope.mp4"], "no such file"),
        (["--model", run_dir, "--prompt", "a", "--format", "webm"], "invalid choice"),
        (["--model", run_dir, "--prompt", "a", "--steps", "0"], "positive integer"),
        (["--model", run_dir, "--prompt", "a", "--refine-ratio", "1.5"], "refine_ratio must be in (0, 1]; got 1.5"),
        (["--model", run_dir, "--prompt", "a", "--refine-steps", "-2"], "expected an integer >= 0"),
        (["--model", run_dir, "--prompt", "a", "--refine-unit", "clip"], "invalid choice"),
        (["--model", run_dir, "--prompt", "a", "--refine-temperature", "-1"], "--refine-temperature"),
        (["--model", run_dir, "--prompt", "a", "--refine-guidance-scale", "-1"], "--refine-guidance-scale"),
    ]
    for argv, match in cases:
        expect_user_error(capsys, argv, match)
    assert main(["--model", str(run_dir), "--prompt", "a", "--device", "tpu9"]) == 2
    assert "not a torch device" in capsys.readouterr().err

    mismatched = tmp_path / "mismatch"
    build_pipeline().save_pretrained(mismatched)
    other_vocabulary = MaskGitTransformer(tiny_maskgit_config(codebook_size=128, latent_shape=(3, 8, 8)))
    other_vocabulary.save_pretrained(mismatched / "transformer")
    expect_user_error(capsys, ["--model", mismatched, "--prompt", "a"], "vocabulary mismatch")


def test_subprocess_exit_code_and_help(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scripts.generate", "--model", str(tmp_path / "missing"),
                           "--prompt", "a"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "magvit2-generate: error: --model" in proc.stderr


def test_help_lists_every_option_with_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--prompt", "--prompt-file", "--negative-prompt", "--num-frames", "--steps",
                 "--guidance-scale", "--temperature", "--choice-temperature", "--top-k", "--seed", "--out-dir",
                 "--format", "--fps", "--prime-video", "--device", "--unmask-order"):
        assert flag in text
    assert "default: samples" in text and "default: mp4" in text


def test_slugify():
    assert slugify("A Cat, jumping!") == "a-cat-jumping"
    assert slugify("Crème brûlée") == "creme-brulee"
    assert slugify("!!!") == "video"
    assert len(slugify("word " * 40)) <= 48


def test_cli_seed_is_pythons_manual_seed(run_dir, tmp_path):
    """`--seed 0` is `torch.Generator().manual_seed(0)` and the log records 0 (the seed given, not one derived from
    it); video j of a run uses seed + j, and batching does not change any video beyond float rounding (a batch of 3
    and a batch of 1 differ by ~1e-6 in the logits; the tiny untrained model's near-flat logits can turn that into
    another draw at a near tie, so exactness is asserted only for the same batching)."""
    import torch

    from maskgit import TextToVideoPipeline
    from trainers.data.video_io import read_video

    out = tmp_path / "cli"
    assert generate("--model", run_dir, "--prompt", "a red ball", "clouds", "--num-videos-per-prompt", "2",
                    "--seed", "0", "--batch-size", "3", out=out) == 0
    lines = log_lines(out)
    assert [line["seed"] for line in lines] == [0, 1, 2, 3]
    assert [(line["prompt_index"], line["video_index"]) for line in lines] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    pipe = TextToVideoPipeline.from_pretrained(run_dir)
    for batch in (lines[:3], lines[3:]):  # the CLI's batches of 3, each row with its own generator
        videos = pipe([line["prompt"] for line in batch], output_type="pt",
                      generator=[torch.Generator().manual_seed(line["seed"]) for line in batch]).frames
        for line, video in zip(batch, videos):
            python = write_video(tmp_path / f"py-{line['seed']}.mp4", to_uint8(video), fps=8)
            assert np.array_equal(read_video(out / line["file"]), read_video(python)), line

    single = tmp_path / "single"
    assert generate("--model", run_dir, "--prompt", "a red ball", "clouds", "--num-videos-per-prompt", "2",
                    "--seed", "0", "--batch-size", "1", out=single) == 0
    same = 0
    for line, other in zip(lines, log_lines(single)):
        batched, alone = (read_video(d / x["file"]).astype(int) for d, x in ((out, line), (single, other)))
        assert np.abs(batched - alone).mean() < 3.0, line  # another seed would differ by tens of levels
        same += np.array_equal(batched, alone)
    assert same >= 2


def test_prime_frames_choose_how_much_of_the_prime_is_kept(run_dir, tmp_path, caplog):
    clip = tmp_path / "prime.mp4"
    write_video(clip, pan_frames(20, (16, 16)), lossless=True)
    out = tmp_path / "primed"
    with caplog.at_level("INFO"):
        assert generate("--model", run_dir, "--prompt", "pan on", "--prime-video", clip, out=out) == 0
    assert "keeping 3 of its 20 frame(s) (choose with --prime-frames)" in caplog.text
    assert generate("--model", run_dir, "--prompt", "pan on", "--prime-video", clip, "--prime-frames", "1",
                    out=out) == 0
    assert log_lines(out)[-1]["prime_frames"] == 1
    assert generate("--model", run_dir, "--prompt", "pan on", "--prime-video", clip, "--prime-frames", "5",
                    out=out) == 0  # the whole first window primed: the video reproduces the prime's codes
    assert log_lines(out)[-1]["prime_frames"] == 5
    assert main(["--model", str(run_dir), "--prompt", "x", "--prime-video", str(clip), "--prime-frames", "4",
                 "--device", "cpu", "--out-dir", str(out)]) == 2
    assert main(["--model", str(run_dir), "--prompt", "x", "--prime-video", str(clip), "--prime-frames", "21",
                 "--num-frames", "21", "--device", "cpu", "--out-dir", str(out)]) == 2
