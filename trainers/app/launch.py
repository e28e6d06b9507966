"""`magvit2-app`'s work after argument parsing: load the models (before gradio is imported, so a bad path fails
fast), warm them up, then serve the page (`ui.serve`) until Ctrl-C."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from trainers.commands.generate import resolve_device

from .generation import warm_up
from .models import load_models

MODEL_SWITCH = ("auto", "on", "off")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can reach the page."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_app(model: str | None, tokenizer: str | None, host: str = "127.0.0.1", port: int = 7860,
            device: str | None = None, out_dir: str | os.PathLike = "samples", queue_size: int = 8,
            model_switch: str = "auto", allow_outside_paths: bool = False, allow_pickle_text_encoder: bool = False,
            max_upload: str = "200mb") -> None:
    """Load, warm up, serve. model_switch: whether the page may load other model folders ("auto": only when the
    page is served on a loopback address, since anyone who reaches it could name any folder this user can read)."""
    if model_switch not in MODEL_SWITCH:
        raise ValueError(f"--model-switch must be one of {MODEL_SWITCH}; got {model_switch!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be in [1, 65535]; got {port}")
    flags = {"allow_outside_paths": allow_outside_paths, "allow_pickle_text_encoder": allow_pickle_text_encoder}
    models = load_models(model, tokenizer, resolve_device(device), **flags)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out-dir {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    print(f"magvit2-app: {models.describe()}", flush=True)
    print(f"magvit2-app: warmed up in {warm_up(models):.2f} s; videos and samples.jsonl go to {out}", flush=True)

    try:
        from .ui import AppState, serve  # gradio is imported here, after the models loaded
    except ModuleNotFoundError as e:
        if e.name not in ("gradio", "httpx"):
            raise
        raise ImportError(f"magvit2-app needs the app extra ({e.name} is missing): pip install "
                          "'magvit2-maskgit[app]'") from None

    switch = model_switch == "on" or (model_switch == "auto" and is_loopback(host))
    serve(AppState(models, out, allow_model_switch=switch, load_flags=flags), host, port, queue_size, max_upload)
