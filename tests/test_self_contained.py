"""The repository is self-contained: nothing in it reads files that sit beside a checkout (such as `../shared`, which
only a developer's and CI's machines have). `.ci/run` also runs the whole suite from a clone in a temporary folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a path that climbs out of the repository to a sibling folder: "../shared", parents[2] / "shared", ...
_OUTSIDE = re.compile(r"(\.\./shared|parents\[[2-9]\]\s*/\s*[\"']shared)")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    suffixes = (".py", ".sh", ".toml", ".cfg", ".yaml", "Makefile")
    return [ROOT / line for line in out.splitlines() if line.endswith(suffixes)]


def test_no_file_reads_beside_the_checkout():
    offenders = []
    for path in tracked_files():
        if path.is_file() and _OUTSIDE.search(path.read_text(encoding="utf-8", errors="replace")):
            offenders.append(str(path.relative_to(ROOT)))
    offenders = [p for p in offenders if p != "tests/test_self_contained.py"]
    assert offenders == [], f"these files read outside the repository: {offenders}"


def test_the_conversion_fixture_is_in_the_repository():
    fixture = ROOT / "tests" / "fixtures" / "open-magvit2-video-tiny"
    for name in ("README.md", "config.json", "weights.safetensors", "io.safetensors"):
        assert (fixture / name).is_file(), f"missing {fixture / name}"


def test_ci_runs_the_suite_from_a_clone_with_nothing_beside_it():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "git clone" in ci and "make test" in ci
    assert ci.index("git clone") < ci.index("make test")
