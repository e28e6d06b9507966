"""The repository is self-contained: nothing in it reads files that sit beside a checkout (such as the reference
folder `shared` next to it, which only a developer's and CI's machines have). `.ci/run` also runs the whole suite
from a clone in a temporary folder. The tests share helpers through tests/helpers/ and fixtures through
tests/conftest.py, never through each other."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a path that climbs out of the repository to the sibling folder: dot-dot-slash + its name, or parents[2+] / its
# name (the name is assembled so that this file does not itself hold such a path)
_SIBLING = "".join(("sh", "ared"))
_OUTSIDE = re.compile(r"(\.\.[/\\]" + _SIBLING + r"|parents\[[2-9]\]\s*/\s*[\"']" + _SIBLING + ")")


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


def test_no_test_file_imports_another_test_file_or_conftest():
    """pytest imports each test file (and conftest.py) once as its own module; importing it again as `tests.test_x`
    runs its module code a second time and ties one test file to another's internals. Shared code lives in
    tests/helpers/ (for the tests and the benchmarks alike)."""
    offenders = []
    for path in sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(re.fullmatch(r"(tests\.)?(test_\w+|conftest)(\..*)?", name) for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"import shared code from tests/helpers/ instead: {offenders}"
