"""Checks of untrusted input that every stage uses: config values against dataclass type hints, paths that must stay
inside a folder, UTF-8 text files read with the file named, and non-finite tensors.

* `check_value(value, hint, key)`: a JSON/YAML value against a type hint (`int`, `float`, `bool`, `str`, `None`,
  unions, `tuple[X, ...]`, `tuple[X, Y]`, `dict[str, Any]`, `Any`): ints are ints (not floats, bools or strings) and
  fit in 64 bits, floats are finite numbers, booleans are booleans. Raises `ValueError("KEY must be ...; got ...")`.
* `check_config_dict(cls, data, where)`: a (partial) mapping against config dataclass `cls` without building it:
  unknown keys, nested sections that are not mappings, and every value's type. `magvit2.serialization.
  config_from_dict` runs the same checks while it builds, so every config class benefits.
* `inside(path, folder)`: whether `path`, symlinks resolved, lies inside `folder` (symlinks resolved too).
* `read_utf8(path, what)`: a text file's contents; bytes that are not UTF-8 raise `ValueError` naming the file.
* `nonfinite_tensors(state)`: names of floating tensors holding NaN or Inf.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", str: "a string", list: "a list", tuple: "a list", dict: "a mapping"}.get(type(value))
    if kind is None and isinstance(value, Mapping):
        kind = "a mapping"
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{shown} ({kind})" if kind else shown


def _expected(hint: Any) -> str:
    """Human words for a type hint: 'an int', 'a finite number or null', 'a list of 2 ints', ..."""
    if hint is Any:
        return "any value"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_expected(a) for a in args))
    if hint is type(None):
        return "null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} ({', '.join(_expected(a) for a in args)})"
    if origin in (dict, Mapping) or hint in (dict, Mapping) or dataclasses.is_dataclass(hint):
        return "a mapping"
    return {int: "an int", float: "a finite number", bool: "true or false", str: "a string"}.get(
        hint, f"a {getattr(hint, '__name__', hint)}")


def _plural(hint: Any) -> str:
    return {int: "ints", float: "finite numbers", bool: "booleans", str: "strings"}.get(hint, _expected(hint))


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` (JSON/YAML types; tuples or lists for tuple hints) fits `hint`."""
    if hint is Any or hint is object:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        try:
            return math.isfinite(float(value))
        except OverflowError:
            return False
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin in (dict, Mapping) or hint in (dict, Mapping) or dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            return False
        if args and args[0] is str:
            return all(isinstance(k, str) for k in value)
        return True
    if origin is list or hint is list:
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this checker does not understand: the dataclass validates it


def check_value(value: Any, hint: Any, key: str) -> None:
    """Raise `ValueError("KEY must be EXPECTED; got VALUE")` unless `value` fits the type hint."""
    if _matches(value, hint):
        return
    message = f"{key} must be {_expected(hint)}; got {_describe(value)}"
    wants_number = any(a in (int, float) for a in (hint, *typing.get_args(hint)))
    if isinstance(value, str) and wants_number:
        try:
            float(value)
            message += " (YAML reads 1e-4 as text: write 1.0e-4)" if "e" in value.lower() else " (remove the quotes)"
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and int in (hint, *typing.get_args(hint)):
        message += " (out of range: ints must lie in [-2**63, 2**63 - 1])"
    raise ValueError(message)


def dataclass_in(annotation: Any) -> type | None:
    """The dataclass inside an annotation like `X` or `X | None`."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def config_fields(cls: type) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    """`({name: field}, {name: resolved type hint})` of the init fields of config dataclass `cls`."""
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    return known, typing.get_type_hints(cls)


def check_keys(data: Any, known: typing.Iterable[str], where: str) -> None:
    """`data` must be a mapping whose keys are all in `known` (error lists the known ones)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or 'the config'} must be a mapping; got {_describe(data)}")
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown keys{f' in {where}' if where else ''}: {unknown}; known keys: {sorted(known)}")


def check_config_dict(cls: type, data: Any, where: str = "", exclude: typing.Iterable[str] = ()) -> None:
    """Check a (partial) mapping for config dataclass `cls` without building it: unknown keys (fields in `exclude`
    count as unknown), sections that are not mappings, and each value against its type hint. Errors name the key as
    `where.key` (`key` when `where` is empty)."""
    known, hints = config_fields(cls)
    known = set(known) - set(exclude)
    check_keys(data, known, where)
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        sub = dataclass_in(hints[name])
        if sub is not None and isinstance(value, Mapping):
            check_config_dict(sub, value, key)
        else:
            check_value(value, hints[name], key)


# ---------------------------------------------------------------------------------------------------------------
# files and folders


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` lies inside `folder` (or is it), both with symlinks resolved."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def plain_name(name: Any) -> bool:
    """A file name with no folder part: a non-empty str, no separator, not '.' or '..', no NUL."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name)


def read_utf8(path: str | os.PathLike, what: str = "file") -> str:
    """The text of `path`; bytes that are not UTF-8 raise ValueError naming the file and the offset."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: {what} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); save it "
                         "as UTF-8") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The parsed JSON of a UTF-8 file; ValueError naming the file when it is not UTF-8 or not JSON."""
    try:
        return json.loads(read_utf8(path, what))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """`"key (nan=N, inf=M)"` for every floating tensor of `state` that holds NaN or Inf."""
    bad = []
    for key, t in state.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            finite = torch.isfinite(t.detach())
            if not bool(finite.all()):
                nan = int(torch.isnan(t).sum())
                bad.append(f"{key} (nan={nan}, inf={int((~finite).sum()) - nan})")
    return bad
