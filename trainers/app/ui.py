"""The page and the server of `magvit2-app` (Gradio; the `app` extra).

Offline by construction: analytics and gradio's version check are off (GRADIO_ANALYTICS_ENABLED is set before gradio
is imported), the theme's fonts are the ones gradio ships (`LocalFont`), and nothing else is fetched. Every event
that touches a model shares one concurrency slot ("model"), so one generation or reconstruction runs at a time; the
queue is bounded (`queue_size`), and a full queue is refused with gradio's own message. User errors reach the page as
one message (`report_error`); anything else is logged with its traceback on the server console and shown as one
message too. The server keeps serving either way.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
from gradio import networking

from trainers.logging import get_logger

from .generation import GenerateRequest, batch_prompts, generate
from .models import LoadedModels, frame_choices, load_models, tokenizer_frame_choices
from .tokenizer_view import reconstruct_upload

log = get_logger("magvit2.app")
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError, ImportError)
MODEL = "model"  # the one concurrency slot every model-using event shares
ERROR_SECONDS = 20  # how long an error message stays in the page
STARTUP_CHECK_SECONDS = 120  # how long the page may take to answer its first request
MEDIA_TYPES = [".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif", ".jpg", ".jpeg", ".png", ".webp"]
CSS = """
#video video, #unmask-video video, #recon-video video, .gallery-container video { image-rendering: pixelated; }
#unmask-strip img, #code-map img, #gallery img { image-rendering: pixelated; }
"""


@dataclass
class AppState:
    """What every session shares: the loaded models, the output folder, the results since the app started."""

    models: LoadedModels
    out_dir: Path
    allow_model_switch: bool = True
    load_flags: dict[str, Any] = field(default_factory=dict)
    gallery: list[tuple[str, str]] = field(default_factory=list)  # (GIF path, prompt), newest first
    reconstructions: int = 0


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def report_error(what: str, e: Exception) -> None:
    """One message in the page (a toast; the outputs keep what they showed, so no component is marked as failed).
    User errors show their one line; anything else also logs its traceback on the server console."""
    if isinstance(e, USER_ERRORS):
        message = _one_line(e)
    else:
        log.exception("could not %s", what)
        message = f"{type(e).__name__}: {_one_line(e)} (the traceback is on the server console)"
    gr.Warning(message, title=f"Cannot {what}", duration=ERROR_SECONDS)


def _number(value: Any, name: str, integer: bool = False) -> float | int | None:
    if value is None or value == "":
        return None
    if integer and isinstance(value, int) and not isinstance(value, bool):
        return value  # exactly, even past 2**53
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if integer:
        if not number.is_integer():
            raise ValueError(f"{name} must be a whole number; got {value}")
        return int(number)
    return number


def _defaults(state: AppState) -> dict[str, Any]:
    """The Generate tab's controls for the loaded pipeline (its frame lengths and saved sampling defaults)."""
    pipe = state.models.pipeline
    if pipe is None:
        return {"frames": [1], "num_frames": 1, "steps": 12, "guidance": 3.0, "guidance_end": 3.0, "ramp": False,
                "temperature": 1.0, "choice_temperature": 4.5, "top_k": 0, "refine_steps": 0}
    s = pipe.settings()
    g = s.guidance_scale
    ramp = isinstance(g, tuple)
    return {"frames": frame_choices(pipe), "num_frames": s.num_frames, "steps": s.num_inference_steps,
            "guidance": g[0] if ramp else g, "guidance_end": g[1] if ramp else g, "ramp": ramp,
            "temperature": s.temperature, "choice_temperature": s.choice_temperature, "top_k": s.top_k or 0,
            "refine_steps": s.refine_steps}


def build_app(state: AppState) -> gr.Blocks:
    """The page: a Model box (when switching is allowed), the Generate and Tokenizer tabs."""
    d = _defaults(state)
    with gr.Blocks(title="magvit2-maskgit", analytics_enabled=False) as demo:
        gr.Markdown("## magvit2-maskgit: text to video, one unmasking step at a time")
        info = gr.Markdown(lambda: state.models.describe(), elem_id="model-info")
        with gr.Accordion("Model", open=False, visible=state.allow_model_switch), gr.Row():
            model_box = gr.Textbox(label="Pipeline or run folder (or a tokenizer folder)", elem_id="model-path",
                                   value=str(state.models.model_dir or ""), scale=3)
            tok_box = gr.Textbox(label="Tokenizer folder for the Tokenizer tab (optional)", scale=3)
            load_btn = gr.Button("Load", scale=1, elem_id="load")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt",
                                            placeholder="a red digit 3 moving left")
                        negative = gr.Textbox(label="Negative prompt (optional)", elem_id="negative")
                        with gr.Row():
                            seed = gr.Number(label="Seed", value=0, precision=0, elem_id="seed")
                            random_seed = gr.Checkbox(label="random seed", value=False, elem_id="random-seed")
                        frames = gr.Dropdown(choices=d["frames"], value=d["num_frames"], elem_id="frames",
                                             label="Frames (1 + k*f: the lengths this tokenizer makes)")
                        steps = gr.Slider(1, 64, value=d["steps"], step=1, label="Unmasking steps", elem_id="steps")
                        guidance = gr.Slider(0, 20, value=d["guidance"], step=0.1, elem_id="guidance",
                                             label="Guidance scale (1 = none)")
                        with gr.Row():
                            ramp = gr.Checkbox(label="ramp the guidance", value=d["ramp"], elem_id="ramp")
                            guidance_end = gr.Slider(0, 20, value=d["guidance_end"], step=0.1,
                                                     label="... to this scale at the last step",
                                                     elem_id="guidance-end")
                        temperature = gr.Slider(0, 3, value=d["temperature"], step=0.05, elem_id="temperature",
                                                label="Temperature (0 = greedy)")
                        with gr.Accordion("More sampling settings", open=False):
                            choice_temperature = gr.Slider(0, 10, value=d["choice_temperature"], step=0.1,
                                                           label="Choice temperature (re-masking noise)")
                            top_k = gr.Number(value=d["top_k"], precision=0, minimum=0,
                                              label="Top-k (0 = all codes)")
                            refine = gr.Slider(0, 64, value=d["refine_steps"], step=1, elem_id="refine-steps",
                                               label="Refinement rounds (each redraws a share of the codes given "
                                                     "the rest, keeping the likelier one)")
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate",
                                                 interactive=state.models.pipeline is not None)
                        with gr.Accordion("Batch of prompts", open=False):
                            batch_text = gr.Textbox(label="One prompt per line", lines=4, elem_id="batch-text")
                            batch_file = gr.File(label="... or a prompt file (UTF-8 text, one per line)",
                                                 file_types=[".txt"], type="filepath", elem_id="batch-file")
                            batch_btn = gr.Button("Generate batch", elem_id="generate-batch",
                                                  interactive=state.models.pipeline is not None)
                    with gr.Column(scale=3):
                        with gr.Row():
                            video = gr.Video(label="Video", elem_id="video", autoplay=True, loop=True, height=300,
                                             interactive=False)
                            unmask_video = gr.Video(label="Unmasking, one frame per step (scrub to watch)",
                                                    elem_id="unmask-video", height=300, interactive=False, loop=True)
                        status = gr.Markdown(elem_id="status")
                        strip = gr.Image(label="Unmasking: a row per step, a column per frame (dim: still masked, "
                                               "the model's current guess shown)", type="filepath", height=420,
                                         elem_id="unmask-strip", interactive=False, format="png")
                        downloads = gr.File(label="Download (mp4, GIF)", file_count="multiple", elem_id="downloads",
                                            interactive=False)
                        record = gr.Textbox(label="samples.jsonl: the exact settings, as magvit2-generate logs them",
                                            lines=3, max_lines=8, elem_id="record", interactive=False,
                                            buttons=["copy"])
                        command = gr.Textbox(label="The same video from the command line", elem_id="command",
                                             interactive=False, buttons=["copy"])
                gallery = gr.Gallery(label="Generated since the app started (newest first)", columns=8, height=220,
                                     fit_columns=False, object_fit="contain", elem_id="gallery",
                                     value=lambda: list(state.gallery), interactive=False)
            with gr.Tab("Tokenizer", id="tokenizer"), gr.Row():
                with gr.Column(scale=2):
                    upload = gr.File(label="A clip or an image", file_types=MEDIA_TYPES, type="filepath",
                                     elem_id="upload")
                    tok_frames = gr.Dropdown(choices=["auto", *tokenizer_frame_choices(state.models.tokenizer)],
                                             value="auto", label="Frames (auto: as magvit2-reconstruct picks)",
                                             elem_id="tok-frames")
                    recon_btn = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct")
                    metrics = gr.Markdown(elem_id="tok-metrics")
                with gr.Column(scale=3):
                    recon_video = gr.Video(label="Original | reconstruction", elem_id="recon-video", height=300,
                                           autoplay=True, loop=True, interactive=False)
                    code_map = gr.Image(label="Code map: one panel per latent frame, one colour per code",
                                        type="filepath", elem_id="code-map", interactive=False, format="png")

        settings = [negative, seed, random_seed, frames, steps, guidance, ramp, guidance_end, temperature,
                    choice_temperature, top_k, refine]
        outputs = [video, status, downloads, record, command, strip, unmask_video, gallery, seed]

        def run(prompts_of, *values, progress=gr.Progress()):  # noqa: B008 (gradio finds its progress bar by this default)
            yield from _generate(state, prompts_of, values, outputs, progress)

        def single(prompt_text, *values, progress=gr.Progress()):  # noqa: B008 (gradio finds its progress bar by this default)
            yield from run(lambda: [prompt_text], *values, progress=progress)

        def batch(text, file, *values, progress=gr.Progress()):  # noqa: B008 (gradio finds its progress bar by this default)
            yield from run(lambda: batch_prompts(text, file), *values, progress=progress)

        common = dict(concurrency_limit=1, concurrency_id=MODEL, show_progress="full")  # a bar per unmasking step
        generate_btn.click(single, [prompt, *settings], outputs, **common)
        prompt.submit(single, [prompt, *settings], outputs, **common)
        batch_btn.click(batch, [batch_text, batch_file, *settings], outputs, **common)
        recon_btn.click(lambda f, n: _reconstruct(state, f, n), [upload, tok_frames],
                        [recon_video, metrics, code_map], concurrency_limit=1, concurrency_id=MODEL)
        load_outputs = [info, frames, steps, guidance, ramp, guidance_end, temperature, choice_temperature, top_k,
                        refine, generate_btn, batch_btn, tok_frames]
        load_btn.click(lambda m, t: _switch(state, m, t), [model_box, tok_box], load_outputs,
                       concurrency_limit=1, concurrency_id=MODEL)
    return demo


def _generate(state: AppState, prompts_of, values, outputs, progress):
    video, status, downloads, record, command, strip, unmask_video, gallery, seed_box = outputs
    (negative, seed, random_seed, frames, steps, guidance, ramp, guidance_end, temperature, choice_temperature,
     top_k, refine) = values
    try:
        prompts = prompts_of()
        top_k = _number(top_k, "top-k", integer=True)
        request = GenerateRequest(
            prompts=tuple(prompts), negative_prompt=negative, seed=None if random_seed else _number(seed, "seed", True),
            num_frames=_number(frames, "frames", True), steps=_number(steps, "steps", True),
            guidance_scale=_number(guidance, "guidance scale"),
            guidance_end=_number(guidance_end, "guidance end") if ramp else None,
            temperature=_number(temperature, "temperature"),
            choice_temperature=_number(choice_temperature, "choice temperature"), top_k=top_k or None,
            refine_steps=_number(refine, "refinement rounds", integer=True))
        n, started = len(prompts), time.monotonic()
        files: list[str] = []
        lines: list[str] = []

        def on_step(i: int, step: int, num_steps: int) -> None:
            progress((i * num_steps + step + 1, n * num_steps), unit="steps",
                     desc=f"video {i + 1}/{n}: unmasking step {step + 1}/{num_steps}")

        for kind, result in generate(state.models, request, state.out_dir, on_step):
            sample = result.sample
            if kind == "video":
                lines.append(json.dumps(sample.record))
                yield {video: str(sample.path), record: "\n".join(lines), command: result.command,
                       seed_box: sample.record["base_seed"],
                       status: f"Video {sample.index + 1}/{n} ready after {time.monotonic() - started:.2f} s "
                               f"(seed {sample.record['seed']}, base seed {sample.record['base_seed']})"}
            else:
                files += [str(sample.path), str(result.gif)]
                state.gallery.insert(0, (str(result.gif), sample.record["prompt"]))  # GIFs: animated thumbnails
                yield {downloads: list(files), strip: str(result.strip), unmask_video: str(result.unmasking),
                       gallery: list(state.gallery)}
        yield {status: f"Done: {n} video{'s' if n > 1 else ''} in {time.monotonic() - started:.2f} s, written to "
                       f"`{state.out_dir}`"}
    except Exception as e:
        report_error("generate", e)
        yield {status: gr.skip()}  # a generator that yields nothing would clear every output


def _reconstruct(state: AppState, file: str | None, frames: str) -> tuple[str, str, str]:
    try:
        if not file:
            raise ValueError("upload a clip or an image first")
        num_frames = None if frames in (None, "auto") else _number(frames, "frames", integer=True)
        state.reconstructions += 1
        report = reconstruct_upload(state.models.tokenizer, file, state.out_dir / "reconstructions",
                                    state.reconstructions, state.models.tokenizer_training, num_frames)
        return str(report.side_by_side), report.markdown(), str(report.code_map)
    except Exception as e:
        report_error("reconstruct", e)
        return gr.skip(), gr.skip(), gr.skip()


def _switch(state: AppState, model: str, tokenizer: str) -> list[Any]:
    try:
        if not state.allow_model_switch:
            raise ValueError("loading other models from the page is off (start the app with --model-switch on)")
        model, tokenizer = (model or "").strip() or None, (tokenizer or "").strip() or None
        try:
            state.models = load_models(model, tokenizer, state.models.device, **state.load_flags)
        except USER_ERRORS:
            raise
        except Exception as e:  # a folder that will not load for any reason: say which and why, keep serving
            raise ValueError(f"cannot load {model or tokenizer}: {type(e).__name__}: {_one_line(e)}") from None
        d = _defaults(state)
        has_pipe = state.models.pipeline is not None
        return [state.models.describe(), gr.update(choices=d["frames"], value=d["num_frames"]), d["steps"],
                d["guidance"], d["ramp"], d["guidance_end"], d["temperature"], d["choice_temperature"], d["top_k"],
                d["refine_steps"], gr.update(interactive=has_pipe), gr.update(interactive=has_pipe),
                gr.update(choices=["auto", *tokenizer_frame_choices(state.models.tokenizer)], value="auto")]
    except Exception as e:
        report_error("load the model", e)
        return [gr.skip()] * 13


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def make_app(state: AppState, queue_size: int) -> gr.Blocks:
    """The page with its queue: at most `queue_size` requests wait while one runs; more are refused."""
    demo = build_app(state)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo


def _page_answers(url: str) -> bool:
    """gradio's check that the page it just started answers (`networking.url_ok`), without its 3 s limit: on a busy
    machine rendering the page takes longer, and gradio then refuses to start."""
    try:
        return httpx.head(url, timeout=STARTUP_CHECK_SECONDS).status_code in (200, 401, 301, 302, 303, 307, 308)
    except httpx.HTTPError:
        return False


def serve(state: AppState, host: str, port: int, queue_size: int, max_upload: str = "200mb") -> None:
    """Serve until Ctrl-C (or SIGTERM): print the address once the page can be loaded, then block."""
    demo = make_app(state, queue_size)
    gradio_check, networking.url_ok = networking.url_ok, _page_answers
    try:
        _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                                show_error=False, allowed_paths=[str(state.out_dir)], ssr_mode=False,
                                max_file_size=max_upload, footer_links=["settings"], css=CSS, mcp_server=False,
                                pwa=False, enable_monitoring=False)
    except OSError as e:
        raise ValueError(f"cannot serve on {host}:{port}: {_one_line(e)} (pick another --port)") from None
    finally:
        networking.url_ok = gradio_check
    print(f"magvit2-app: serving on {url.rstrip('/')}/ (Ctrl-C stops)", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops it as cleanly as Ctrl-C
    try:
        demo.block_thread()  # returns on Ctrl-C (gradio closes the server and says so)
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.close()
    print("magvit2-app: stopped", flush=True)
