"""Commands run as users run them: in a subprocess (under torchrun for several processes, optionally through
tests/faults.py) or in-process through their `main`, and the one-line errors they must give."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# what every subprocess gets: offline, untracked, one thread, the repository importable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(REPO)}


def launch(module: str, *args: str, processes: int = 1, faults: tuple[str, ...] = (), env: dict | None = None,
           timeout: int = 240) -> subprocess.CompletedProcess:
    """`module` on 1 process, or on `processes` under torchrun (gloo), optionally through tests/faults.py. A run
    past `timeout` (under pytest's own 300 s) fails with every process's Python stacks (see `run_or_dump`)."""
    target = [str(REPO / "tests" / "faults.py"), *faults, module] if faults else ["-m", module]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               *(target if faults else ["-m", module])]
    else:
        cmd = [sys.executable, *target]
    return run_or_dump([*cmd, *args], env={**ENV, **(env or {})}, timeout=timeout)


def run_or_dump(cmd: list[str], env: dict, timeout: float, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`cmd` in a subprocess; past `timeout`, SIGABRT to it and every descendant (torchrun starts its workers in
    sessions of their own) so that each Python process prints all its threads' stacks (PYTHONFAULTHANDLER), then an
    AssertionError that shows them: a hung distributed test says where it hung instead of only that it did."""
    import psutil  # accelerate's dependency

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**env, "PYTHONFAULTHANDLER": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
        for p in family:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGABRT)
        _, alive = psutil.wait_procs(family, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd[:8])} ... hung for {timeout} s; its stacks:\n{err[-12000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`result`, asserting it exited 0 (the failure shows the end of its stderr)."""
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def world_size_of(run: Path) -> int:
    """The process count the run's last invocation trained with (summary.json)."""
    return json.loads((run / "summary.json").read_text())["world_size"]


def train_maskgit_cli(data: dict[str, Path], run_dir: Path, *extra: str, check: bool = True,
                      faults: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """magvit2-train-maskgit in a subprocess through tests/faults.py on `make_stage_two`'s data: the tiny preset,
    9 updates of batch 2, seed 3, then `extra` flags; asserts exit 0 unless `check` is False."""
    cmd = [sys.executable, str(REPO / "tests" / "faults.py"), *faults, "scripts.train_maskgit", "--tokenizer",
           str(data["tokenizer"]), "--codes",
           str(data["codes"]), "--out", str(run_dir), "--preset", "tiny", "--max-steps", "9", "--seed", "3",
           "--batch-size", "2", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def cli(module: str, args, capsys) -> tuple[int, str]:
    """`module.main(args)` in-process: its exit code and what it wrote to stderr."""
    code = importlib.import_module(module).main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_line(code: int, err: str, *needles: str) -> None:
    """Exit 2 with exactly one "error:" line, holding every needle, and no traceback."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), err


def expect_user_error(capsys, argv: list[str], match: str) -> None:
    """magvit2-train-maskgit's `main(argv)` exits 2 with one stderr line, naming the command, that holds `match`."""
    from scripts.train_maskgit import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors (bad choices) exit from parse_args
        code = e.code
    assert code == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("magvit2-train-maskgit: error:") and match in err, err
