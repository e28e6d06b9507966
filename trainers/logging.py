"""Run logging: ``metrics.jsonl`` always (the record); experiment trackers through accelerate; rank-0 console output.

``metrics.jsonl`` has one JSON object per line: ``{"step": int, "kind": "train" | "val" | ..., "time": float,
<name>: float | str, ...}``, flushed after every line so a crash loses nothing already logged. ``read_metrics``
reads it back (ignoring a torn last line). Every method is a no-op on non-main processes.

Trackers are accelerate's (`Accelerator(log_with=...)`, `init_trackers`, `log`): tensorboard, wandb, mlflow,
comet_ml, aim, clearml, dvclive, ... whatever is installed (`run.report_to`, `--report_to`). They open on the first
record (so a caller can still name the project and run), receive every numeric value as `<kind>/<name>` and the
run's flattened config as hyperparameters. Validation samples (the GIFs a validation writes) go to the trackers that
take media: wandb as videos (`wandb.Video` of the GIF), tensorboard as animated GIF images (TensorBoard has no
video type: its `add_video` writes the same GIF, but needs moviepy; here Pillow writes it); other trackers get the
scalars only, and the log says the samples stay in RUN_DIR/samples/.

wandb is never interactive: if neither ``WANDB_MODE`` nor an API key (``WANDB_API_KEY`` or a ``~/.netrc`` entry) is
set, it runs with ``mode="offline"`` and says so; ``WANDB_MODE=disabled`` is honoured (nothing written or sent).
"""

from __future__ import annotations

import json
import logging
import netrc
import numbers
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["MetricsLogger", "get_logger", "progress_bar", "read_metrics"]

LOG_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_HANDLER_FLAG = "_magvit2_handler"


def _is_main_from_env() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


class _MainOnlyFilter(logging.Filter):
    """On non-main ranks let only ERROR and above through."""

    def __init__(self, is_main: bool) -> None:
        super().__init__()
        self.is_main = is_main

    def filter(self, record: logging.LogRecord) -> bool:
        return self.is_main or record.levelno >= logging.ERROR


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (as logging's own last-resort handler does), not
    the stream that was current when the logger was first made: a caller that swaps stderr (pytest's capture, a
    Jupyter kernel, a tool redirecting output) never leaves it writing to a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def get_logger(name: str, is_main: bool | None = None, level: int = logging.INFO) -> logging.Logger:
    """A logger printing ``[time] LEVEL name: message`` to stderr; non-main ranks print only errors.

    ``is_main`` defaults to ``RANK``/``LOCAL_RANK`` == 0. Calling it again does not add a second handler. Records
    still propagate to the root logger (so pytest's ``caplog`` and user handlers see them).
    """
    log = logging.getLogger(name)
    main = _is_main_from_env() if is_main is None else is_main
    handler = next((h for h in log.handlers if getattr(h, _HANDLER_FLAG, False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        setattr(handler, _HANDLER_FLAG, True)
        log.addHandler(handler)
    handler.filters = [_MainOnlyFilter(main)]
    log.setLevel(level)
    return log


def progress_bar(total: int | None, disable: bool = False, **kwargs: Any):
    """A tqdm bar (``disable=not is_main`` on other ranks); extra kwargs go to tqdm.

    When stderr is not a terminal (a log file, a CI job) the bar redraws at most every 30 s instead of 10 times a
    second, so logs stay readable."""
    import sys

    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(total=total, disable=disable, **kwargs)


def as_floats(values: Mapping[str, Any]) -> dict[str, float]:
    """Log values as Python floats, reading every tensor among them from the device in one transfer (the loss terms
    of a step stay tensors until a log step)."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if keys:
        device = values[keys[0]].device
        stacked = torch.stack([values[k].detach().float().reshape(()).to(device) for k in keys])  # (n,)
        out.update(zip(keys, stacked.tolist()))
    return {k: float(out[k]) for k in values}


def _to_scalar(name: str, value: Any) -> float | str:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {name!r} must be a scalar; got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().item())
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):  # includes bool, int, numpy scalars
        return float(value)
    raise TypeError(f"metric {name!r} must be a number, a scalar tensor or a string; got {type(value).__name__}")


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_trackers(names: list[str]) -> list[str]:
    """accelerate tracker names, each installed ("all": whichever are). ImportError naming the missing package
    (accelerate itself would leave an uninstalled tracker out silently)."""
    from accelerate.tracking import get_available_trackers

    available = sorted(str(t.value) if hasattr(t, "value") else str(t) for t in get_available_trackers())
    missing = [n for n in names if n != "all" and n not in available]
    if missing:
        raise ImportError(f"--report_to {missing[0]}: the {missing[0]} package is not installed (pip install "
                          f"{missing[0]}); trackers installed here: {', '.join(available) or 'none'}")
    return list(names)


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as tracker hyperparameters: `section.key` -> bool, int, float or str (lists as JSON)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def _tensorboard_gif(writer: Any, tag: str, path: Path, step: int) -> None:
    """An animated GIF as a TensorBoard image summary: what SummaryWriter.add_video writes (without moviepy)."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(path) as im:
        width, height = im.size
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=path.read_bytes())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
    writer.flush()


class MetricsLogger:
    """Append metrics to ``run_dir/metrics.jsonl`` and send them to `accelerator`'s trackers; no-op if not main.

    Args:
        run_dir: the run's output folder (created).
        is_main: only the main process writes anything.
        accelerator: an `Accelerator` built with `log_with` (see `trainers.run_setup.make_accelerator`); None or one
            without trackers: metrics.jsonl only.
        project_name: the trackers' project (wandb project, tensorboard subfolder, ...).
        config: the run's config (nested mapping), stored by the trackers as hyperparameters.
        run_name: the run's name where a tracker has one (wandb).
    """

    def __init__(self, run_dir: str | os.PathLike, is_main: bool = True, accelerator: Any = None,
                 project_name: str = "magvit2", config: Mapping[str, Any] | None = None,
                 run_name: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.path = self.run_dir / "metrics.jsonl"
        self.accelerator = accelerator if accelerator is not None and accelerator.log_with else None
        self.project_name, self.config, self.run_name = project_name, dict(config or {}), run_name
        self._trackers_open = False
        self._file = None
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run; closed in close()

    @property
    def trackers(self) -> list[Any]:
        """The open trackers (accelerate's GeneralTracker objects); empty before the first record and off main."""
        return list(self.accelerator.trackers) if self._trackers_open else []

    def open_trackers(self) -> None:
        """Start the trackers (once; the first `log` does it): accelerate's init_trackers with the project, the
        flattened config and, for wandb, the run folder, the run name and offline mode when it has no credentials."""
        if not self.is_main or self.accelerator is None or self._trackers_open:
            return
        wandb: dict[str, Any] = {"dir": str(self.run_dir)}
        if self.run_name is not None:
            wandb["name"] = self.run_name
        names = [str(t.value) if hasattr(t, "value") else str(t) for t in self.accelerator.log_with]
        if "wandb" in names and not os.environ.get("WANDB_MODE") and not _wandb_has_credentials():
            wandb["mode"] = "offline"
            logging.getLogger(__name__).warning(
                "wandb: WANDB_MODE is unset and no API key was found; logging offline under %s "
                "(sync later with `wandb sync`)", self.run_dir)
        self.accelerator.init_trackers(self.project_name, config=flat_config(self.config),
                                       init_kwargs={"wandb": wandb})
        self._trackers_open = True
        others = [n for n in names if n not in ("tensorboard", "wandb")]
        logging.getLogger(__name__).info(
            "trackers: %s (project %r)%s", ", ".join(names), self.project_name,
            f"; validation samples are not sent to {', '.join(others)} (they stay in {self.run_dir / 'samples'})"
            if others else "")

    def log(self, metrics: Mapping[str, Any], step: int, kind: str = "train") -> None:
        """Write one record: ``{"step", "kind", "time", **metrics}`` (values become floats; strings pass); numeric
        values also go to the trackers as ``<kind>/<name>``."""
        if not self.is_main or self._file is None:
            return
        values = {k: _to_scalar(k, v) for k, v in metrics.items()}
        for reserved in ("step", "kind", "time"):
            if reserved in values:
                raise ValueError(f"metric name {reserved!r} is reserved")
        record = {"step": int(step), "kind": kind, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.accelerator is not None:
            self.open_trackers()
            numeric = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, float)}
            self.accelerator.log(numeric, step=int(step))

    def log_samples(self, folder: str | os.PathLike, step: int, kind: str = "val") -> None:
        """The GIFs in `folder` (a validation's samples) to the trackers that take media: wandb as videos,
        tensorboard as animated GIF images, tagged `<kind>/samples/<file stem>`."""
        if not self.is_main or self.accelerator is None:
            return
        gifs = sorted(Path(folder).glob("*.gif"))
        if not gifs:
            return
        self.open_trackers()
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                for gif in gifs:
                    _tensorboard_gif(tracker.writer, f"{kind}/samples/{gif.stem}", gif, int(step))
            elif tracker.name == "wandb":
                import wandb

                tracker.log({f"{kind}/samples/{gif.stem}": wandb.Video(str(gif), format="gif") for gif in gifs},
                            step=int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.close_trackers()

    def close_trackers(self) -> None:
        """Finish the trackers' runs (the next record opens new ones); metrics.jsonl stays open."""
        if self._trackers_open:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator.trackers.clear()  # finished: end_training must not finish them again
            self._trackers_open = False

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (optionally only one ``kind``). A torn final line (crash mid-write) is
    ignored; a malformed line elsewhere raises ``ValueError`` naming it. NaN/Infinity values read back as floats."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):
                break
            raise ValueError(f"{path}:{lineno}: malformed metrics line ({exc})") from exc
        if kind is None or record.get("kind") == kind:
            records.append(record)
    return records

