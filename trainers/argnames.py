"""How the caller spells a trainer's inputs, so that errors name what the user typed: the CLI's flags (`--out`,
`--resume latest`) or the Python API's keywords (`run_dir=`, `resume='latest'`). The trainers take an `ArgNames`
(default: their own keywords); `scripts._cli` passes the flags, `trainers.api` the seed's keywords."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["KEYWORDS", "MASKGIT_KEYWORDS", "ArgNames"]


@dataclass(frozen=True)
class ArgNames:
    """One spelling per input. A name ending in '=' is a keyword (`give` writes `resume='latest'`); any other is a
    flag (`--resume latest`) or a config key (`run.keep_last=2`)."""

    run_dir: str = "run_dir="
    resume: str = "resume="
    init_from: str = "init_from="
    init_from_image: str = "init_from_image="
    data: str = "data_dirs="
    val_data: str = "val_dir="
    codes: str = "codes_dir="
    val_codes: str = "val_codes_dir="
    tokenizer: str = "tokenizer="
    sample_prompts: str = "sample_prompts="
    batch_size: str = "data.batch_size="
    keep_last: str = "run.keep_last="

    def __getitem__(self, name: str) -> str:
        """The bare name: `--out` / `run_dir`."""
        spelled = getattr(self, name)
        return spelled[:-1] if spelled.endswith("=") else spelled

    def give(self, name: str, value: Any) -> str:
        """How to pass `value` as `name`: `--resume latest` / `resume='latest'`, `--out RUN` / `run_dir='RUN'`."""
        spelled = getattr(self, name)
        if spelled.endswith("="):
            return f"{spelled}{str(value)!r}" if isinstance(value, (str, os.PathLike)) else f"{spelled}{value}"
        return f"{spelled} {value}"


KEYWORDS = ArgNames()  # the trainer classes' own keywords
MASKGIT_KEYWORDS = ArgNames(val_data="val_data_dir=")  # MaskGitTrainer's
