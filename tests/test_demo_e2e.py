"""The demo pipeline end to end in seconds (tiny presets): every stage runs and the report holds its fields."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from trainers.data.video_io import read_video


@pytest.mark.slow
def test_tiny_demo_writes_samples_and_a_complete_report(tmp_path, capsys):
    from scripts.demo import main
    from trainers.model_sources import pipeline_dir

    out = tmp_path / "demo"
    finish_by = time.time() + 3600
    assert main(["--tiny", "--out", str(out), "--data", str(tmp_path / "data"), "--finish-by", str(finish_by)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]  # the demo ends with the command that opens the app
    assert last.startswith("open the app on this pipeline: "), last
    app = shlex.split(last.split(": ", 1)[1])
    assert Path(app[0]).name == "magvit2-app" and app[1:] == ["--model", str(out / "maskgit")]
    assert pipeline_dir(app[2]) == out / "maskgit" / "pipeline"
    report = json.loads((out / "report.json").read_text())
    for key in ("psnr_db", "ssim", "codebook_usage"):
        assert 0 <= report["tokenizer"][key] < 100
    # stage one: still frames, then the video tokenizer inflated from them (trainers.demo.stage_one)
    assert report["tokenizer"]["image_steps"] == report["tokenizer"]["steps"] == 6
    assert report["tokenizer"]["mixed_precision"] == "no"  # the tiny recipe leaves it to the launcher: fp32 here
    image_run = json.loads((out / "tokenizer-image" / "tokenizer" / "config.json").read_text())
    assert image_run["training"]["num_frames"] == 1, image_run.get("training")
    assert "on still frames and 6 on clips" in (out / "report.md").read_text()
    assert 0 <= report["maskgit"]["val_token_accuracy"] <= 1
    assert report["maskgit"]["compiled"] is False and report["maskgit"]["mixed_precision"] == "no"  # the tiny recipe
    # the MaskGit trains on digits/train + digits/more (2 + 1 clips per seen pair), stage one on digits/train only
    assert report["maskgit"]["train_clips"] == 90 and "on 90 training clips" in (out / "report.md").read_text()
    assert json.loads((out / "codes" / "more" / "index.json").read_text())["num_clips"] == 30
    for group, n in (("seen", 30), ("held_out", 10)):
        scores = report["prompt_following"][group]
        assert scores["n"] == n and 0 <= scores["digit_acc"] <= 1 and 0 <= scores["direction_acc"] <= 1
    legible = report["prompt_following"]["legibility"]
    assert legible["clips"] == 30 and legible["ground_truth_digit_acc"] > 0.8  # the judge reads real clips
    for key in ("reconstructed_digit_acc", "ground_truth_frame_consistency", "reconstructed_frame_consistency"):
        assert 0 <= legible[key] <= 1, legible
    assert legible["ground_truth_frame_consistency"] > 0.5  # real clips, seen at the tiny tokenizer's 16x16 (0.77)
    assert len(report["showcase"]["prompts"]) == 20  # first seen and first held-out video of each digit
    showcase = read_video(out / report["showcase"]["file"])  # (t, h, w, 3): 4 rows x 5 tiles of 16 px, 3x
    assert showcase.shape == (5, 3 * (4 * 18 + 2), 3 * (5 * 18 + 2), 3)
    assert set(report["minutes"]) == {"data", "tokenizer", "tokenize", "maskgit", "generate", "report", "total"}
    assert report["settings"]["finish_by"] == pytest.approx(finish_by)  # tiny runs are step-bound: nothing cut
    assert report["settings"]["training_minutes_given"]["maskgit"]["given"] is None
    markdown = (out / "report.md").read_text()
    assert report["prompt_following"]["settings"]["unmask_order"] == "confidence"
    assert "update-starved" not in markdown  # tiny runs are step-bound by design: no shortfall to report
    from trainers.demo.report import write_report  # the same numbers from a real run: 6 updates each are short

    write_report({**report, "settings": {**report["settings"], "tiny": False}}, tmp_path)
    assert "updates (the recipe's results: 883 or more)" in (tmp_path / "report.md").read_text()
    assert "## Prompt following" in markdown and "![generated](samples/showcase.gif)" in markdown
    assert "SSIM (of the [0, 1] frames" in markdown and report["tokenizer"]["ssim_range"] == [0.0, 1.0]
    for name in ("tokenizer_curves.png", "maskgit_curves.png", "samples/contact_sheet.png"):
        assert (out / name).stat().st_size > 1000
    records = [json.loads(line) for line in (out / "samples" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 40
    video = read_video(out / "samples" / records[0]["file"])
    assert video.shape == (5, 16, 16, 3)
    assert (out / "samples" / records[0]["file"].replace(".mp4", ".gif")).is_file()
    with pytest.raises(FileExistsError):  # never writes over a previous run
        from trainers.demo.run import run_demo

        run_demo(out, tmp_path / "data", tiny=True)


def test_a_sigterm_during_stage_one_ends_the_demo_after_saving(tmp_path, monkeypatch):
    """A pre-empted (SIGTERM'd) demo must stop, not tokenize with a part-trained stage one and train a MaskGit on
    its codes for minutes (wave 26 found it going on); what the stopped stage trained is saved."""
    import os
    import signal

    from trainers.base import Trainer
    from trainers.demo.run import run_demo
    from trainers.stopping import TrainingStopped

    next_batch = Trainer.next_batch

    def sigterm_at_update_3(self, batches):
        if self.step == 2 and self.name == "tokenizer":
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the trainer: a clean stop after this update
        return next_batch(self, batches)

    monkeypatch.setattr(Trainer, "next_batch", sigterm_at_update_3)
    out, before = tmp_path / "demo", signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as stopped:
        run_demo(out, tmp_path / "data", tiny=True)
    assert stopped.value.code == 143 and stopped.value.step == 3
    assert stopped.value.run_dir == out / "tokenizer-image"  # the still-frame phase: the video phase never started
    assert (out / "tokenizer-image" / "checkpoints" / "step-00000003" / "COMPLETE.json").is_file()
    assert not (out / "tokenizer").exists() and not (out / "codes").exists() and not (out / "maskgit").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the trainer put back the handler it found


def test_demo_stage_one_choices():
    """`--tokenizer lfq-gan` trains the paper's stage one (LFQ codes, annealed entropy, the GAN in the final phase)
    with the same command."""
    from magvit2 import preset_config
    from trainers.configs import build_config
    from trainers.demo.run import DEMO_TOKENIZERS, TOKENIZER_SHARE, _budget, run_demo
    from trainers.recipes import TOKENIZER_RECIPES

    limit = _budget(11.0, TOKENIZER_SHARE, TOKENIZER_RECIPES["demo"])
    assert limit == {"max_minutes": 4.4, "max_steps": 550}
    configs = {name: build_config("tokenizer", "demo", overrides={**extra, "run": limit})
               for name, extra in DEMO_TOKENIZERS.items()}
    fsq, lfq = (preset_config(c.preset, **c.tokenizer) for c in (configs["fsq"], configs["lfq-gan"]))
    assert fsq.use_fsq and configs["fsq"].disc_start_step > limit["max_steps"]  # no GAN in the default
    assert not lfq.use_fsq and lfq.codebook_size == 2**10 and lfq.lfq_entropy_anneal_start_weight == 0.4
    assert configs["lfq-gan"].disc_start_step == 200 < limit["max_steps"]
    assert configs["lfq-gan"].loss.adversarial_weight > 0
    with pytest.raises(ValueError, match="unknown demo tokenizer 'vq'"):
        run_demo(tokenizer="vq")


def test_a_deadline_cuts_the_training_minutes_to_what_fits(monkeypatch):
    """`make demo` must end within 15 minutes of its start, install included: on a slower machine each training stage
    gets what fits before the deadline, keeping the reserves for the stages after it, and the report says so."""
    from trainers.demo import run
    from trainers.demo.report_notes import deadline_note
    from trainers.recipes import MASKGIT_RECIPES

    recipe = MASKGIT_RECIPES["demo"]
    assert run._budget(10.5, 0.6, recipe) == {"max_minutes": 6.3, "max_steps": 1138}  # no deadline: as before
    assert run._budget(10.5, 0.6, recipe, fits=9.0)["max_minutes"] == 6.3  # time to spare: the asked minutes
    assert run._budget(10.5, 0.6, recipe, fits=6.1) == {"max_minutes": 6.1, "max_steps": 1138}  # cut, same cap
    assert run._budget(10.5, 0.6, recipe, fits=-2.0)["max_minutes"] == pytest.approx(0.25 * 6.3, abs=0.01)  # floor
    monkeypatch.setattr(run.time, "time", lambda: 1000.0)
    # a recipe sampling best of N leaves the MaskGit's minutes for its extra decodes (the demo recipe decodes once)
    assert run._maskgit_reserve({"pipeline": {"best_of": 2}}) == pytest.approx(run.AFTER_TRAINING_RESERVE
                                                                               + run.DECODE_RESERVE)
    assert run._maskgit_reserve(recipe) == run._maskgit_reserve({}) == run.AFTER_TRAINING_RESERVE
    # a machine that tokenized slowly generates slowly too: the reserve grows with the measured minutes (the fixed
    # reserve made a 3x slower draw, 1.24 min tokenizing, overrun its 15 minutes), a fast one keeps the floor
    assert run._maskgit_reserve(recipe, tokenize_minutes=0.5) == run.AFTER_TRAINING_RESERVE
    slow = run._maskgit_reserve(recipe, tokenize_minutes=1.24)
    assert slow == pytest.approx(run.AFTER_TRAINING_RESERVE - run.DECODE_RESERVE + run.DECODE_PER_TOKENIZE * 1.24)
    assert slow > 2.23 + 0.11 + 0.27  # that draw's generating, report and final validation past the MaskGit's minutes
    best_of_2 = run._maskgit_reserve({"pipeline": {"best_of": 2}}, 1.24)
    assert best_of_2 == pytest.approx(slow + run.DECODE_PER_TOKENIZE * 1.24)
    assert run._minutes_left(None, 2.0) is None
    assert run._minutes_left(1000.0 + 600, 2.0) == pytest.approx(8.0)
    settings = {"finish_by": 1600.0, "training_minutes_given": {"tokenizer": {"asked": 4.2, "given": 3.94},
                                                                 "maskgit": {"asked": 6.3, "given": 6.3}}}
    assert deadline_note(settings) == (" To end by its deadline (`--finish-by`; `make demo`: DEMO_BUDGET, 15 minutes "
                                       "by default, from its start) the demo trained stage one 3.94 of 4.20 min.")
    settings["training_minutes_given"]["tokenizer"]["given"] = 4.2
    assert deadline_note(settings) == deadline_note({"finish_by": None}) == ""


def test_report_says_when_a_slower_machine_left_the_models_short_of_the_recipes_updates():
    """A CPU without native bf16 trains a third of the updates in the demo's minutes (wave 25: 217 clip and 383
    MaskGit updates, 28 / 18% digit accuracy): its report must not read as the recipe's result, and it names the
    minutes at which this machine's rate would reach the recipe's counts."""
    from trainers.demo.report import shortfall_args
    from trainers.demo.report_notes import RECIPE_UPDATES, update_shortfall

    slow = {"tokenizer": {"steps": 217}, "maskgit": {"steps": 383},
            "settings": {"minutes_budget": 10.5, "training_minutes_given": {"tokenizer": {"asked": 4.2, "given": 3.52},
                                                                            "maskgit": {"asked": 6.3, "given": 3.94}}}}
    note = update_shortfall(*shortfall_args(slow))
    assert "stage one 217 updates (the recipe's results: 610 or more)" in note
    assert "the MaskGit 383 updates (the recipe's results: 883 or more)" in note
    # stage one sets the need: 10.5 min x 610 / 217 x 3.52 / 4.2 = 24.7 -> 25 (the MaskGit's alone: 15.1)
    assert "`make demo DEMO_MINUTES=25`" in note
    assert "DEMO_MINUTES=20`" in update_shortfall({"maskgit": 383}, 10.5, slow["settings"]["training_minutes_given"])
    # no deadline record (a library call): the stage had all its minutes, 10.5 x 610 / 217 = 29.5 -> 30
    assert "DEMO_MINUTES=30`" in update_shortfall({"tokenizer": 217}, 10.5, {})
    # README's wave-21 run (772 clip, 1,021 MaskGit updates) and a run just above the threshold say nothing
    assert update_shortfall({"tokenizer": 772, "maskgit": 1021}, 10.5, {}) == ""
    assert update_shortfall({k: math.ceil(0.75 * n) for k, n in RECIPE_UPDATES.items()}, 10.5, {}) == ""


def test_make_demo_passes_a_deadline_15_minutes_from_its_start_unless_minutes_are_set():
    root = Path(__file__).resolve().parents[1]

    # under `make test` this is a make inside make: its flags, level and any DEMO_* settings stay outside
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES") and not k.startswith("DEMO_")}

    def dry_run(*args: str) -> str:  # -o: the venv counts as built, so only the demo's own command is printed
        out = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "VENV=.venv", "demo",
                              *args], cwd=root, env=env, capture_output=True, text=True, check=True).stdout
        lines = [line for line in out.splitlines() if "bash scripts/demo.sh" in line]
        assert len(lines) == 1, out
        return lines[0]

    start = time.time()
    line = dry_run()
    assert "DEMO_MINUTES=10.5" in line, line
    finish_by = int(line.split("DEMO_FINISH_BY=")[1].split()[0])
    assert start + 15 * 60 - 2 <= finish_by <= time.time() + 15 * 60 + 1
    assert "DEMO_FINISH_BY= " in dry_run("DEMO_MINUTES=30")  # the user's own minutes: no deadline
    line = dry_run("DEMO_BUDGET=14.5")
    assert int(line.split("DEMO_FINISH_BY=")[1].split()[0]) <= time.time() + 14.5 * 60 + 1


def test_report_names_the_refinement_rounds_the_demo_recipe_samples_with():
    from trainers.configs import build_config
    from trainers.demo.report_notes import (
        best_of_note,
        frame_mask_note,
        guidance_note,
        maskgit_engine_note,
        order_note,
        refine_note,
        temperature_note,
    )

    defaults = build_config("maskgit", "demo").pipeline
    # the demo unmasks most confident first (wave 24's Halton order stays off); a run sampled otherwise says so
    assert defaults.get("unmask_order", "confidence") == "confidence"
    assert order_note({"unmask_order": "confidence"}) == order_note({}) == ""
    assert order_note({"unmask_order": "halton"}) == ", unmasking in halton order"
    assert (defaults["num_inference_steps"], defaults["refine_steps"]) == (32, 16)  # wave 7: 48 passes, as before
    assert defaults["refine_unit"] == "worst_frame"  # wave 12
    assert refine_note({"refine_steps": 16, "refine_ratio": 0.125, "refine_unit": "worst_frame"}) == \
        " + 16 refinement rounds of the least likely latent frame"
    assert refine_note({"refine_steps": 16, "refine_ratio": 0.125, "refine_unit": "frame", "refine_temperature": 0}) \
        == " + 16 refinement rounds of a random latent frame (most likely codes)"
    # reports written before refine_unit existed redrew a share of the tokens; before refinement, nothing
    assert refine_note({"refine_steps": 16, "refine_ratio": 0.125}) == " + 16 refinement rounds of 12.5% of the tokens"
    assert refine_note({"num_inference_steps": 12}) == ""
    assert refine_note({"refine_steps": 16, "refine_ratio": 0.125, "refine_unit": "worst_frame",
                        "refine_guidance_scale": 1.0}) == \
        " + 16 refinement rounds of the least likely latent frame without guidance"
    assert refine_note({"refine_steps": 4, "refine_ratio": 0.125, "refine_unit": "frame",
                        "refine_guidance_scale": 2.5}) == \
        " + 4 refinement rounds of a random latent frame at guidance 2.5"
    # wave 13: guidance falls from 3 to 2 over the steps; the report says so (a constant scale prints as before)
    assert defaults["guidance_scale"] == [3.0, 2.0]
    assert guidance_note(defaults["guidance_scale"]) == "3.0 -> 2.0 over the steps" and guidance_note(3.0) == "3.0"
    # wave 14: a quarter of the MaskGit's training clips mask one whole latent frame, 40% since wave 17; the report
    # says so (reports of runs without it, and the tiny recipe's, say nothing)
    assert build_config("maskgit", "demo").frame_mask_prob == 0.4
    # wave 16: the codes are drawn at temperature 0.7; the report says so (1, the sampler's default, says nothing)
    assert defaults["temperature"] == 0.7
    assert temperature_note(defaults) == ", temperature 0.7" and temperature_note({"temperature": 1.0}) == ""
    assert frame_mask_note(0.4).startswith(" (40% of them masked one whole latent frame")
    assert frame_mask_note(0.0) == frame_mask_note(None) == ""
    # wave 22: a report of best-of-N sampling says so (the demo decodes once, and reports written before best_of was
    # recorded, say nothing)
    assert "best_of" not in defaults and build_config("maskgit", "demo").run.compile is False
    assert best_of_note({"best_of": 2}).startswith(", the best of 2 decodes by the model's own frame score")
    assert best_of_note({"best_of": 1}) == best_of_note({}) == ""
    # wave 21: how the MaskGit's updates ran; reports from before say nothing, and so does an eager fp32 run
    assert maskgit_engine_note({"compiled": True, "mixed_precision": "bf16"}) == " (torch.compile, bf16 autocast)"
    assert maskgit_engine_note({"compiled": True, "mixed_precision": "no"}) == " (torch.compile)"
    assert maskgit_engine_note({"compiled": False, "mixed_precision": "no"}) == maskgit_engine_note({}) == ""
