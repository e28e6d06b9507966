"""Flattening of nested training state (optimizer / GradScaler state dicts) into safetensors-ready tensors plus
JSON-able metadata, and back (`flatten_state` / `unflatten_state`; `trainers.checkpointing` re-exports both)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["flatten_state", "unflatten_state"]


def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tuples, tensors, scalars) into ``(tensors, JSON-able meta)``.

    Tensors become ``{"__tensor__": key}`` references (key = dotted path, e.g. ``state.0.exp_avg``); tuples
    ``{"__tuple__": [...]}``; dicts with non-string keys ``{"__dict__": [[key, value], ...]}`` (optimizer state is
    keyed by int). ``unflatten_state`` inverts it exactly. Raises ``TypeError`` naming the path of anything else.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        join = (lambda k: f"{path}.{k}" if path else str(k))  # noqa: E731
        if isinstance(x, torch.Tensor):
            if path in tensors:
                raise ValueError(f"two tensors flatten to the same key {path!r}; rename a dict key containing '.'")
            tensors[path] = x
            return {"__tensor__": path}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, (np.integer, np.floating, np.bool_)):
            return x.item()
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, join(i)) for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, join(i)) for i, v in enumerate(x)]
        if isinstance(x, Mapping):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: walk(v, join(k)) for k, v in x.items()}
            for k in x:
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise TypeError(f"cannot store a dict key of type {type(k).__name__} at {path or '<root>'}")
            return {"__dict__": [[k, walk(v, join(k))] for k, v in x.items()]}
        raise TypeError(f"cannot store a {type(x).__name__} at {path or '<root>'} in a checkpoint (not JSON/tensor)")

    return tensors, walk(obj, "")


def unflatten_state(tensors: Mapping[str, torch.Tensor], meta: Any) -> Any:
    """Inverse of ``flatten_state``. Raises ``KeyError`` naming a referenced tensor that is missing."""

    def build(x: Any) -> Any:
        if isinstance(x, list):
            return [build(v) for v in x]
        if isinstance(x, dict):
            if set(x) == {"__tensor__"}:
                if x["__tensor__"] not in tensors:
                    raise KeyError(f"checkpoint state refers to tensor {x['__tensor__']!r}, which is missing")
                return tensors[x["__tensor__"]]
            if set(x) == {"__tuple__"}:
                return tuple(build(v) for v in x["__tuple__"])
            if set(x) == {"__dict__"}:
                return {k: build(v) for k, v in x["__dict__"]}
            return {k: build(v) for k, v in x.items()}
        return x

    return build(meta)
