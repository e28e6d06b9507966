"""R16: metrics.jsonl always, trackers (through accelerate) optional and never interactive, rank-0-only output."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import LoggerType

from trainers.logging import MetricsLogger, check_trackers, get_logger, progress_bar, read_metrics


def test_jsonl_lines_are_flushed_and_read_back(tmp_path):
    with MetricsLogger(tmp_path) as log:
        log.log({"loss": torch.tensor(0.5), "lr": 1e-4, "n": np.int64(3), "ckpt": "step-1"}, step=1)
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()  # visible before close: flushed
        assert len(lines) == 1
        log.log({"psnr": 31.0}, step=2, kind="val")
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["kind"]) for r in records] == [(1, "train"), (2, "val")]
    assert records[0]["loss"] == 0.5 and records[0]["n"] == 3.0 and isinstance(records[0]["n"], float)
    assert records[0]["ckpt"] == "step-1"
    assert read_metrics(tmp_path / "metrics.jsonl", kind="val") == records[1:]
    with pytest.raises(ValueError, match="scalar"), MetricsLogger(tmp_path) as log:
        log.log({"bad": torch.ones(2)}, step=3)


def test_torn_last_line_is_ignored_but_middle_garbage_is_not(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "kind": "train", "loss": NaN}\n{"step": 2, "ki')
    records = read_metrics(path)
    assert len(records) == 1 and records[0]["loss"] != records[0]["loss"]  # NaN survives
    path.write_text('garbage\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:1"):
        read_metrics(path)


def test_non_main_process_writes_nothing(tmp_path):
    log = MetricsLogger(tmp_path / "run", is_main=False, accelerator=Accelerator(cpu=True, log_with="tensorboard",
                                                                                 project_dir=str(tmp_path / "tb")))
    log.log({"loss": 1.0}, step=1)
    log.close()
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


def test_an_uninstalled_tracker_is_one_clear_error(monkeypatch):
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [LoggerType.TENSORBOARD])
    assert check_trackers(["tensorboard", "all"]) == ["tensorboard", "all"]
    with pytest.raises(ImportError, match=r"--report_to mlflow: .*pip install mlflow.*installed here: tensorboard"):
        check_trackers(["tensorboard", "mlflow"])  # accelerate alone would leave it out silently


def test_wandb_goes_offline_without_credentials(tmp_path, monkeypatch, caplog):
    calls = {}

    class Run:
        def log(self, data, step):
            calls.setdefault("logged", []).append((step, data))

        def finish(self):
            calls["finished"] = True

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.update(init=kwargs) or Run()
    fake.config = types.SimpleNamespace(update=lambda values, **kw: calls.update(config=values))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)
    acc = Accelerator(cpu=True, log_with="wandb")
    with MetricsLogger(tmp_path, accelerator=acc, project_name="p", config={"run": {"seed": 3, "x": None}}) as log:
        assert "init" not in calls  # the trackers open with the first record (the project can still be named)
        log.log({"loss": 2.0, "note": "text is not sent"}, step=4)
    assert calls["init"]["mode"] == "offline" and calls["init"]["project"] == "p"
    assert calls["init"]["dir"] == str(tmp_path) and calls["config"] == {"run.seed": 3, "run.x": "None"}
    assert calls["logged"] == [(4, {"train/loss": 2.0})] and calls["finished"]
    assert "offline" in caplog.text and acc.trackers == []


def test_get_logger_format_single_handler_and_rank_filter(capsys):
    log = get_logger("magvit2_test_logger", is_main=True)
    assert get_logger("magvit2_test_logger", is_main=True) is log and len(log.handlers) == 1
    log.info("hello %d", 1)
    assert "INFO magvit2_test_logger: hello 1" in capsys.readouterr().err
    get_logger("magvit2_test_logger", is_main=False)
    log.info("hidden")
    log.error("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "shown" in err
    logging.getLogger("magvit2_test_logger").handlers.clear()


def test_logger_follows_the_current_stderr(monkeypatch, capsys):
    """A logger made while stderr was one stream keeps working after the caller swaps stderr and closes the old
    one (pytest's capture between tests, notebooks, tools redirecting output)."""
    import io

    old = io.StringIO()
    monkeypatch.setattr(sys, "stderr", old)
    log = get_logger("magvit2_swap_logger", is_main=True)
    log.info("first")
    assert "first" in old.getvalue()
    old.close()
    monkeypatch.undo()
    log.info("second")
    err = capsys.readouterr().err
    assert "second" in err and "Logging error" not in err
    logging.getLogger("magvit2_swap_logger").handlers.clear()


def test_progress_bar_is_silent_off_main(capsys):
    for disable in (True, False):
        bar = progress_bar(3, disable=disable, desc="steps")
        bar.update(3)
        bar.close()
        assert ("steps" in capsys.readouterr().err) is not disable
