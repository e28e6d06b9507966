"""Real file-system faults for tests: a tmpfs mounted for the test (root / CAP_SYS_ADMIN, as CI runs `.ci/run`),
remounted read-only or sized so that a run fills it. A test that cannot mount FAILS saying why; it never skips."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "64m") -> Iterator[Path]:
    """A fresh tmpfs of `size` mounted at `where` for the block; unmounted afterwards (lazily if still busy)."""
    where.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    if done.returncode:
        pytest.fail(f"cannot mount a tmpfs at {where} (these tests need root or CAP_SYS_ADMIN, as CI has): "
                    f"{done.stderr.strip() or done.returncode}", pytrace=False)
    try:
        yield where
    finally:
        if _run("umount", str(where)).returncode:
            _run("umount", "-l", str(where))


def remount_readonly(where: Path) -> None:
    done = _run("mount", "-o", "remount,ro", str(where))
    assert done.returncode == 0, f"cannot remount {where} read-only: {done.stderr}"
    probe = where / ".write-probe"
    with pytest.raises(OSError, match="Read-only file system"):
        probe.write_text("x")  # really read-only, for root too
