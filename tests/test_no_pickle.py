"""R3: a static scan proving the package never unpickles, evals or execs (loading untrusted files runs no code)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("magvit2", "maskgit", "trainers", "scripts")
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _dotted(node: ast.AST) -> str:
    """'torch.load' for ``torch.load``, 'eval' for ``eval``; '' for anything more complex."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def find_violations(source: str, filename: str = "<string>") -> list[str]:
    """Unsafe loading calls in ``source``, as 'file:line: what' strings."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            problems += [f"{where}: import {a.name}" for a in node.names if a.name in UNPICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLING_MODULES:
            problems.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            unpickles = name.split(".")[0] in UNPICKLING_MODULES and name.rsplit(".", 1)[-1] in ("load", "loads")
            if unpickles or name in ("eval", "exec", "builtins.eval", "builtins.exec"):
                problems.append(f"{where}: {name}(...)")
            elif name == "torch.jit.load":
                problems.append(f"{where}: torch.jit.load(...)")
            elif name.endswith("torch.load") and not _keyword_is_true(node, "weights_only"):
                problems.append(f"{where}: torch.load(...) without weights_only=True")
            elif name in ("np.load", "numpy.load") and _keyword_is_true(node, "allow_pickle"):
                problems.append(f"{where}: {name}(..., allow_pickle=True)")
    return problems


def test_the_scanner_catches_what_it_should():
    bad = """
import pickle
from dill import loads
x = pickle.loads(b"")
torch.load(path)
torch.load(path, weights_only=False)
torch.jit.load(path)
eval("1")
exec("x = 1")
np.load(path, allow_pickle=True)
"""
    assert len(find_violations(bad)) == 9
    good = "model.eval()\ntorch.load(p, weights_only=True, map_location='cpu')\nsafetensors.torch.load_file(p)\n"
    assert find_violations(good) == []


# The one place code from a file runs, on the user's explicit request: `magvit2-convert i3d` loads the TorchScript
# I3D of the common FVD code once (its --help says so) and writes plain tensors that everything else reads.
ALLOWED = {"trainers/commands/convert_i3d.py": "torch.jit.load(...)"}


def _allowed(problem: str) -> bool:
    file, _, what = problem.partition(":")
    return ALLOWED.get(file) == what.partition(": ")[2]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_never_unpickles_evals_or_execs(package):
    files = sorted((ROOT / package).rglob("*.py"))
    problems = [v for f in files for v in find_violations(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    problems = [p for p in problems if not _allowed(p)]
    assert problems == [], "unsafe loading calls:\n" + "\n".join(problems)


def test_the_one_exception_is_one_call():
    for file, what in ALLOWED.items():
        found = find_violations((ROOT / file).read_text(encoding="utf-8"), file)
        assert [p.partition(": ")[2] for p in found] == [what], found
