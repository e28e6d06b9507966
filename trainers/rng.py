"""Derived randomness: every random choice that matters for resume comes from integers, not RNG snapshots.

A seed for "sample 17 of epoch 3" is ``derive_seed(seed, DATA_KEY, 3, 17)``; a generator for step 40's mask ratios
is ``make_generator(seed, MASK_KEY, 40)``. Resuming therefore needs only the integers (epoch, index, step), and the
global RNGs (``random``, ``numpy``, ``torch``) are never consulted.

The hash is blake2b over the decimal text of the integers, so it is stable across Python versions, processes and
machines (unlike the builtin ``hash()``, which is salted per process for strings and is not a mixing function).
"""

from __future__ import annotations

import hashlib
import numbers

import torch

__all__ = ["derive_seed", "make_generator"]

_PERSON = b"magvit2-rng"  # blake2b personalisation: keeps our seeds apart from any other blake2b use
_MASK_63 = (1 << 63) - 1


def derive_seed(seed: int, *keys: int) -> int:
    """Mix ``seed`` and ``keys`` into a stable 63-bit seed in ``[0, 2**63)``.

    Args:
        seed: the run's base seed (any Python int, negative allowed).
        *keys: further integers, e.g. a purpose tag, an epoch and a sample index. Order matters.

    Returns:
        A non-negative int below 2**63 (valid for ``torch.Generator.manual_seed`` and ``numpy.random.default_rng``).

    Raises:
        TypeError: if any argument is not an integer (bools are refused too: they are almost always a bug here).
    """
    parts = (seed, *keys)
    for i, value in enumerate(parts):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"derive_seed expects integers; argument {i} is {type(value).__name__} ({value!r})")
    text = ",".join(str(int(v)) for v in parts).encode("ascii")
    digest = hashlib.blake2b(text, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "little") & _MASK_63


def make_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *keys))
    return generator
