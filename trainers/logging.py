"""Run logging: ``metrics.jsonl`` always; TensorBoard and Weights & Biases only when asked; rank-0 console output.

``metrics.jsonl`` has one JSON object per line: ``{"step": int, "kind": "train" | "val" | ..., "time": float,
<name>: float | str, ...}``, flushed after every line so a crash loses nothing already logged. ``read_metrics``
reads it back (ignoring a torn last line). Every method is a no-op on non-main processes.

wandb is never interactive: if neither ``WANDB_MODE`` nor an API key (``WANDB_API_KEY`` or a ``~/.netrc`` entry) is
set, it runs with ``mode="offline"`` and says so.
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


def get_logger(name: str, is_main: bool | None = None, level: int = logging.INFO) -> logging.Logger:
    """A logger printing ``[time] LEVEL name: message`` to stderr; non-main ranks print only errors.

    ``is_main`` defaults to ``RANK``/``LOCAL_RANK`` == 0. Calling it again does not add a second handler. Records
    still propagate to the root logger (so pytest's ``caplog`` and user handlers see them).
    """
    log = logging.getLogger(name)
    main = _is_main_from_env() if is_main is None else is_main
    handler = next((h for h in log.handlers if getattr(h, _HANDLER_FLAG, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
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


class MetricsLogger:
    """Append metrics to ``run_dir/metrics.jsonl`` (+ TensorBoard / wandb when enabled); no-op if not main.

    Args:
        run_dir: the run's output folder (created).
        is_main: only the main process writes anything.
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard`` (needs the ``tensorboard`` package).
        wandb: keyword arguments for ``wandb.init`` (e.g. ``{"project": "magvit2"}``), or None for no wandb.
    """

    def __init__(
        self, run_dir: str | os.PathLike, is_main: bool = True, tensorboard: bool = False,
        wandb: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.path = self.run_dir / "metrics.jsonl"
        self._file = None
        self._tb = None
        self._wandb_run = None
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run; closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError("tensorboard=True needs the 'tensorboard' package: "
                                  "pip install 'magvit2-maskgit[track]' (or tensorboard)") from exc
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if wandb is not None:
            self._wandb_run = self._init_wandb(dict(wandb))

    def _init_wandb(self, kwargs: dict[str, Any]):
        try:
            import wandb
        except ImportError as exc:
            raise ImportError("wandb logging was requested but wandb is not installed: pip install wandb "
                              "(or drop the wandb option; metrics.jsonl is always written)") from exc
        if "mode" not in kwargs and not os.environ.get("WANDB_MODE") and not _wandb_has_credentials():
            kwargs["mode"] = "offline"
            logging.getLogger(__name__).warning(
                "wandb: WANDB_MODE is unset and no API key was found; logging offline under %s "
                "(sync later with `wandb sync`)", self.run_dir)
        kwargs.setdefault("dir", str(self.run_dir))
        return wandb.init(**kwargs)

    def log(self, metrics: Mapping[str, Any], step: int, kind: str = "train") -> None:
        """Write one record: ``{"step", "kind", "time", **metrics}`` (values become floats; strings pass)."""
        if not self.is_main or self._file is None:
            return
        values = {k: _to_scalar(k, v) for k, v in metrics.items()}
        for reserved in ("step", "kind", "time"):
            if reserved in values:
                raise ValueError(f"metric name {reserved!r} is reserved")
        record = {"step": int(step), "kind": kind, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        numeric = {k: v for k, v in values.items() if isinstance(v, float)}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(f"{kind}/{k}", v, global_step=int(step))
            self._tb.flush()
        if self._wandb_run is not None:
            self._wandb_run.log({f"{kind}/{k}": v for k, v in numeric.items()}, step=int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

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

