"""`magvit2-app` without a browser: what the Generate and Tokenizer tabs compute (the gradio-free modules of
`trainers.app`), the page's handlers called directly (errors become one message and leave the outputs alone), and the
command line. The page in a real browser: tests/test_app_browser.py."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from magvit2 import OpenMagvit2Config, OpenMagvit2Tokenizer
from scripts.app import main as app_main
from scripts.generate import main as generate_main
from tests.helpers.models import build_pipeline
from trainers.app.generation import GenerateRequest, batch_prompts, generate, reproduce_command
from trainers.app.models import frame_choices, load_models, tokenizer_frame_choices
from trainers.app.tokenizer_view import code_colours, reconstruct_upload
from trainers.app.unmasking import StepRecorder, render_unmasking
from trainers.commands.reconstruct import reconstruct_files
from trainers.data.video_io import read_video

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "open-magvit2-video-tiny"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models on a shared 2-core runner."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A MaskGit run folder holding a tiny pipeline (16x16, f=2, up to 5 frames, 3 steps)."""
    run = tmp_path_factory.mktemp("run")
    build_pipeline(num_inference_steps=3, num_frames=5).save_pretrained(run / "pipeline")
    return run


@pytest.fixture(scope="module")
def models(run_dir):
    return load_models(run_dir, None, CPU)


@pytest.fixture(scope="module")
def open_magvit2_dir(tmp_path_factory) -> Path:
    """A converted Open-MAGVIT2 video tokenizer (the fixture's weights: 32x32, f=4, 8x space, 2^18 codes)."""
    their = json.loads((FIXTURE / "config.json").read_text())
    config = OpenMagvit2Config.from_ddconfig(their["ddconfig"], n_embed=their["n_embed"])
    folder = tmp_path_factory.mktemp("open-magvit2") / "tokenizer"
    OpenMagvit2Tokenizer.from_open_magvit2(load_file(str(FIXTURE / "weights.safetensors")), config
                                           ).save_pretrained(folder)
    return folder


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


# generation ----------------------------------------------------------------------------------------------------


def test_the_app_writes_what_magvit2_generate_writes_for_its_command(models, run_dir, tmp_path):
    """A batch of two with a negative prompt, a guidance ramp, top-k and refinement rounds: the mp4s, their frames and
    the samples.jsonl lines equal those of the printed magvit2-generate command; GIF and unmasking view come along."""
    request = GenerateRequest(prompts=("a red ball, bouncing", "clouds"), negative_prompt="blurry", seed=11,
                              num_frames=3, steps=3, guidance_scale=2.0, guidance_end=4.0, temperature=0.9,
                              choice_temperature=3.0, top_k=20, refine_steps=2)
    steps_seen: list[tuple[int, int, int]] = []
    events = list(generate(models, request, tmp_path / "app", lambda *a: steps_seen.append(a)))
    assert [kind for kind, _ in events] == ["video", "extras", "video", "extras"]
    samples = [s for kind, s in events if kind == "extras"]
    assert steps_seen == [(i, s, 3) for i in range(2) for s in range(3)]
    command = samples[0].command
    assert command == samples[1].command and "--guidance-scale 2.0 4.0" in command and "--top-k 20" in command
    assert "--refine-steps 2 --refine-ratio 0.125 --refine-unit token" in command
    args = shlex.split(command)
    assert generate_main([*args[1:], "--out-dir", str(tmp_path / "cli"), "--device", "cpu"]) == 0
    app_lines, cli_lines = log_lines(tmp_path / "app"), log_lines(tmp_path / "cli")
    assert app_lines == cli_lines and [json.loads(json.dumps(s.sample.record)) for s in samples] == app_lines
    assert app_lines[1]["guidance_scale"] == [2.0, 4.0] and app_lines[1]["prompt_index"] == 1
    assert app_lines[0]["refine_steps"] == 2
    assert app_lines[0]["model"] == str(run_dir / "pipeline") and app_lines[0]["base_seed"] == 11
    for result, line in zip(samples, cli_lines):
        ours, theirs = read_video(result.sample.path), read_video(tmp_path / "cli" / line["file"])
        assert ours.shape == (3, 16, 16, 3) and np.array_equal(ours, theirs)
        assert result.gif.name == result.sample.path.stem + ".gif" and read_video(result.gif).shape[0] == 3
        assert result.strip.is_file() and read_video(result.unmasking).shape[0] == 3  # one frame per step


def test_a_random_seed_is_drawn_recorded_and_reproduces(models, tmp_path):
    request = GenerateRequest(prompts=("clouds",), seed=None, num_frames=3, steps=2)
    (_, first), _ = list(generate(models, request, tmp_path / "a"))
    seed = first.sample.record["base_seed"]
    assert f"--seed {seed}" in first.command
    (_, again), _ = list(generate(models, GenerateRequest(prompts=("clouds",), seed=seed, num_frames=3, steps=2),
                                  tmp_path / "b"))
    assert np.array_equal(first.sample.frames, again.sample.frames)


def test_unmasking_view_dims_what_is_still_masked_and_ends_on_the_video(models):
    pipe = models.pipeline
    recorder = StepRecorder()
    video = pipe("a red ball", num_frames=5, num_inference_steps=4, generator=torch.Generator().manual_seed(3),
                 output_type="pt", callback_on_step_end=recorder,
                 callback_on_step_end_tensor_inputs=recorder.tensor_inputs).frames[0]
    assert len(recorder.latents) == len(recorder.previews) == 4
    view = render_unmasking(pipe.tokenizer, recorder.latents, recorder.previews, pipe.transformer.mask_id)
    assert view.frames.shape == (4, 5, 16, 16, 3) and view.frames.dtype == np.uint8
    assert view.masked[0] > 0.5 and view.masked[-1] == 0 and np.all(np.diff(view.masked) <= 0)
    from magvit2.pixels import to_uint8

    final = to_uint8(video).astype(int)  # the last step has nothing masked: it is the video (decoded in a batch)
    assert np.abs(view.frames[-1].astype(int) - final).max() <= 1
    undimmed = render_unmasking(pipe.tokenizer, recorder.previews, recorder.previews, pipe.transformer.mask_id)
    assert (view.frames[0] != undimmed.frames[0]).any()  # step 1: most codes still masked, so dimmed
    with pytest.raises(ValueError, match="one latents and one preview per step"):
        render_unmasking(pipe.tokenizer, [], [], pipe.transformer.mask_id)


@pytest.mark.parametrize(("request_", "message"), [
    (GenerateRequest(prompts=("  ",)), "the prompt is empty"),
    (GenerateRequest(prompts=("a cat", "")), "the prompt is empty"),
    (GenerateRequest(prompts=(" ".join(["word"] * 100),)), "is 101 tokens long but the text encoder"),
    (GenerateRequest(prompts=("a cat",), num_frames=4), "num_frames=4 is not 1 \\+ 2k"),
    (GenerateRequest(prompts=("a cat",), num_frames=7), "needs 4 latent frames but the transformer holds at most 3"),
    (GenerateRequest(prompts=("a cat",), temperature=-1.0), "temperature must be a number >= 0"),
    (GenerateRequest(prompts=("a cat",), guidance_scale=float("nan")), "guidance scale must be a finite number"),
    (GenerateRequest(prompts=("a",) * 65), "at most 64 prompts"),
])
def test_bad_requests_fail_before_anything_is_written(models, tmp_path, request_, message):
    with pytest.raises(ValueError, match=message):
        list(generate(models, request_, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_batch_prompts_from_text_and_file(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_text("clouds\n\n  a cat  \n", encoding="utf-8")
    assert batch_prompts(" a red ball\n\n", file) == ["a red ball", "clouds", "a cat"]
    assert batch_prompts("", file) == ["clouds", "a cat"]
    with pytest.raises(ValueError, match="the batch is empty"):
        batch_prompts("\n  \n", None)
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        batch_prompts("", tmp_path / "blank.txt")


def test_reproduce_command_quotes_what_a_shell_would_split():
    from maskgit.pipeline_settings import PipelineDefaults

    settings = PipelineDefaults(num_frames=5, guidance_scale=(1.0, 5.0), top_k=3, refine_steps=4, refine_unit="frame",
                                refine_temperature=0.0)
    command = reproduce_command(Path("/runs/my run"), ["it's a cat", "two\tdogs"], settings, -3, "no $HOME")
    args = shlex.split(command)
    assert args[:3] == ["magvit2-generate", "--model", "/runs/my run"]
    assert args[3:7] == ["--prompt", "it's a cat", "--prompt", "two\tdogs"]
    assert args[args.index("--negative-prompt") + 1] == "no $HOME" and args[args.index("--seed") + 1] == "-3"
    assert args[args.index("--guidance-scale") + 1: args.index("--guidance-scale") + 3] == ["1.0", "5.0"]
    assert [args[args.index(f"--refine-{k}") + 1] for k in ("steps", "unit", "temperature")] == ["4", "frame", "0.0"]


# what is loaded ------------------------------------------------------------------------------------------------


def test_models_from_a_run_a_pipeline_a_tokenizer_folder_and_an_open_magvit2_tokenizer(run_dir, open_magvit2_dir):
    from_run = load_models(run_dir, None, CPU)
    assert from_run.model_dir == run_dir / "pipeline" and from_run.tokenizer is from_run.pipeline.tokenizer
    assert frame_choices(from_run.pipeline) == [1, 3, 5]  # f = 2, at most 3 latent frames
    assert "up to 5 frames" in from_run.describe()
    only_tok = load_models(run_dir / "pipeline" / "tokenizer", None, CPU)  # a tokenizer folder as --model
    assert only_tok.pipeline is None and "only the Tokenizer tab" in only_tok.describe()
    both = load_models(run_dir, open_magvit2_dir, CPU)
    assert both.pipeline is not None and isinstance(both.tokenizer, OpenMagvit2Tokenizer)
    assert tokenizer_frame_choices(both.tokenizer)[:3] == [1, 5, 9]
    omg = load_models(None, open_magvit2_dir, CPU)
    assert omg.pipeline is None and "OpenMagvit2Tokenizer" in omg.describe()
    with pytest.raises(ValueError, match="no text-to-video pipeline is loaded"):
        list(generate(omg, GenerateRequest(prompts=("a cat",)), Path("unused")))


def test_a_folder_that_is_not_a_model_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_models(tmp_path / "missing", None, CPU)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"is not a text-to-video pipeline.* \(nor a tokenizer folder\)"):
        load_models(tmp_path / "empty", None, CPU)
    with pytest.raises(ValueError, match="nothing to serve"):
        load_models(None, None, CPU)


# tokenizer tab -------------------------------------------------------------------------------------------------


def test_tokenizer_tab_measures_what_magvit2_reconstruct_measures(models, make_clip, tmp_path):
    clip = make_clip("pan.mp4", num_frames=7, size=(20, 24))
    report = reconstruct_upload(models.tokenizer, clip, tmp_path / "out", 1, models.tokenizer_training)
    metrics = reconstruct_files(models.tokenizer_dir, [clip], tmp_path / "cli", device="cpu")
    assert report.psnr_db == pytest.approx(metrics["clips"][0]["psnr_db"], abs=1e-5)
    assert report.ssim == pytest.approx(metrics["clips"][0]["ssim"], abs=1e-6)
    assert report.frames == metrics["clips"][0]["frames"] == 7 and report.codes_shape == (4, 8, 8)
    assert read_video(report.side_by_side).shape == (7, 16, 32, 3)  # original | reconstruction
    assert 1 <= report.distinct <= 256 and report.usage == pytest.approx(report.distinct / 64)
    from PIL import Image

    assert Image.open(report.code_map).size == (4 * 96 + 5 * 4, 96 + 2 * 4)  # 4 panels of 8x8 cells at 12 px
    assert "PSNR" in report.markdown() and f"of {models.tokenizer.codebook_size}" in report.markdown()
    image = make_clip("photo.png")
    assert reconstruct_upload(models.tokenizer, image, tmp_path / "out", 2).frames == 1
    assert reconstruct_upload(models.tokenizer, clip, tmp_path / "out", 3, num_frames=3).codes_shape == (2, 8, 8)


def test_tokenizer_tab_with_a_converted_open_magvit2_tokenizer(open_magvit2_dir, make_clip, tmp_path):
    omg = load_models(None, open_magvit2_dir, CPU)
    report = reconstruct_upload(omg.tokenizer, make_clip("pan.mp4", num_frames=9, size=(32, 32)), tmp_path, 1)
    assert report.codes_shape == (3, 4, 4) and report.codebook_size == 2**18 and report.distinct <= 48
    assert np.isfinite(report.psnr_db) and read_video(report.side_by_side).shape == (9, 32, 64, 3)


def test_an_upload_that_is_not_a_video_is_named_by_its_own_name(models, tmp_path):
    notes = tmp_path / "uploads" / "notes.mp4"
    notes.parent.mkdir()
    notes.write_text("meeting notes, not a video")
    with pytest.raises(ValueError, match=r"^cannot read notes\.mp4: ") as e:
        reconstruct_upload(models.tokenizer, notes, tmp_path / "out", 1)
    assert str(tmp_path) not in str(e.value)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"a\.txt is not a video or an image: expected one of"):
        reconstruct_upload(models.tokenizer, tmp_path / "a.txt", tmp_path / "out", 2)


def test_code_colours_are_fixed_per_code_and_never_black():
    codes = np.array([[0, 1], [1, 262143]])
    rgb = code_colours(codes)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and rgb.min() >= 64
    assert np.array_equal(rgb[0, 1], rgb[1, 0]) and not np.array_equal(rgb[0, 0], rgb[0, 1])


# the page's handlers, called directly ---------------------------------------------------------------------------


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    """What the page would show: the messages given to gr.Warning."""
    import gradio as gr

    shown: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, **kwargs: shown.append(message))
    return shown


def test_handlers_show_one_message_and_leave_the_outputs_alone(models, tmp_path, warnings, run_dir):
    import gradio as gr

    from trainers.app import ui

    state = ui.AppState(models, tmp_path)
    outputs = [object() for _ in range(9)]  # stand-ins for the output components
    values = (None, 0, False, 3, 2, 3.0, False, 3.0, 1.0, 4.5, 0, 1)
    progress: list[tuple] = []
    updates = list(ui._generate(state, lambda: ["   "], values, outputs, lambda *a, **k: progress.append(a)))
    assert warnings == ["the prompt is empty: describe the video you want, e.g. 'a red digit 3 moving left'"]
    assert len(updates) == 1 and list(updates[0]) == [outputs[1]]  # only the status, and only "no change"

    updates = list(ui._generate(state, lambda: ["clouds"], values, outputs, lambda *a, **k: progress.append(a)))
    assert progress == [((1, 2),), ((2, 2),)]  # the progress bar moves once per unmasking step (2 steps)
    video, status, downloads, record, command, _, _, gallery, seed = outputs
    assert updates[0][video].endswith("000-clouds.mp4") and updates[0][seed] == 0
    assert json.loads(updates[0][record]) == log_lines(tmp_path)[0] and updates[0][command].startswith("magvit2-")
    assert log_lines(tmp_path)[0]["refine_steps"] == 1  # the refinement slider reaches the sampler
    assert updates[1][downloads][1].endswith("000-clouds.gif") and updates[1][gallery][0][1] == "clouds"
    assert "Done: 1 video" in updates[-1][status] and len(warnings) == 1

    batch = list(ui._generate(state, lambda: batch_prompts("a red ball\n\nclouds", None), values, outputs,
                              lambda *a, **k: None))  # what "Generate batch" runs
    assert [u[video].rsplit("/", 1)[1] for u in batch if video in u] == ["001-a-red-ball.mp4", "002-clouds.mp4"]
    assert [len(u[downloads]) for u in batch if downloads in u] == [2, 4] and len(state.gallery) == 3
    assert [line["prompt_index"] for line in log_lines(tmp_path)] == [0, 0, 1] and "Done: 2 videos" in batch[-1][status]

    assert ui._reconstruct(state, None, "auto") == (gr.skip(), gr.skip(), gr.skip())
    assert warnings[-1] == "upload a clip or an image first"
    result = ui._switch(state, str(tmp_path / "missing"), "")
    assert result == [gr.skip()] * 13 and "does not exist" in warnings[-1] and state.models is models
    (tmp_path / "bad" / "pipeline.json").parent.mkdir()
    (tmp_path / "bad" / "pipeline.json").write_text("{not json")
    ui._switch(state, str(tmp_path / "bad"), "")
    assert "bad/pipeline.json" in warnings[-1] and state.models is models
    result = ui._switch(state, str(run_dir / "pipeline" / "tokenizer"), "")
    assert state.models.pipeline is None and result[10] == gr.update(interactive=False)
    state.allow_model_switch = False
    ui._switch(state, str(run_dir), "")
    assert "--model-switch on" in warnings[-1] and state.models.pipeline is None


def test_one_model_call_at_a_time_through_a_bounded_queue(models, tmp_path):
    from trainers.app import ui

    demo = ui.make_app(ui.AppState(models, tmp_path), queue_size=3)
    assert demo._queue.max_size == 3
    model_events = [fn for fn in demo.fns.values() if fn.concurrency_id == ui.MODEL]
    names = sorted(fn.name for fn in model_events)
    assert names == ["<lambda>", "<lambda>", "batch", "single", "single"]  # reconstruct, load, batch, click, submit
    assert all(fn.concurrency_limit == 1 for fn in model_events)
    assert all(fn.concurrency_id == ui.MODEL or fn.name == "<lambda>" for fn in demo.fns.values())


def test_an_unexpected_error_is_one_message_with_its_traceback_on_the_console(models, tmp_path, warnings,
                                                                            monkeypatch, caplog):
    from trainers.app import ui

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(ui, "reconstruct_upload", broken)
    assert ui._reconstruct(ui.AppState(models, tmp_path), "clip.mp4", "auto")[0] is not None
    assert warnings == ["RuntimeError: disk on fire (the traceback is on the server console)"]
    assert "disk on fire" in caplog.text and "Traceback" in caplog.text


# the command line ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    ([], "pass --model RUN_DIR|PIPELINE_DIR"),
    (["--model", "/nonexistent/run"], "does not exist"),
    (["--model", "x", "--port", "0"], "expected a positive integer"),
    (["--model", "x", "--port", "70000"], "--port must be in [1, 65535]"),
])
def test_cli_errors_are_one_line_and_exit_2(capsys, argv, message):
    try:
        code = app_main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("magvit2-app: error:") and message in err, err


def test_is_loopback():
    from trainers.app.launch import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_text_encoders_count_tokens_before_truncation():
    from maskgit.text import TextEncoder, TinyTextEncoder, build_text_encoder

    tiny = TinyTextEncoder(dim=8, max_length=4)
    assert tiny.count_tokens(["a red ball, bouncing", ""]) == [6, 1]  # BOS + words and punctuation; not cut at 4
    minilm = build_text_encoder("default", max_length=8)
    counts = minilm.count_tokens(["a red digit", " ".join(["word"] * 20)])
    assert counts == [5, 22]  # [CLS] + 3 + [SEP]; 20 words + 2, beyond max_length
    assert minilm.encode(["x " * 20]).embeds.shape[1] == 8  # what encode would have cut

    class Silent(TextEncoder):
        pass

    with pytest.raises(NotImplementedError):
        Silent().count_tokens(["a"])


def test_the_app_decodes_once_even_when_the_pipeline_defaults_to_best_of(models, tmp_path):
    """The unmasking view shows one decode, so the page asks for best_of=1 and says so in its command."""
    pipe = models.pipeline
    saved = pipe.defaults
    pipe.defaults = dataclasses.replace(saved, best_of=3)
    try:
        steps_seen: list[tuple[int, int, int]] = []
        events = list(generate(models, GenerateRequest(prompts=("clouds",), seed=2, num_frames=3, steps=3),
                               tmp_path / "app", lambda *a: steps_seen.append(a)))
    finally:
        pipe.defaults = saved
    extras = [s for kind, s in events if kind == "extras"]
    assert steps_seen == [(0, s, 3) for s in range(3)]  # three steps, not three decodes of three
    assert "--best-of 1" in extras[0].command and log_lines(tmp_path / "app")[0]["best_of"] == 1
