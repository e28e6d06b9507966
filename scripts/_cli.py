"""Shared command-line plumbing: user errors exit 2 with one line on stderr and no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from trainers.checkpointing import CheckpointError
from trainers.guards import NonFiniteLossError

# Errors a user can cause (bad paths, values or files; a missing optional extra): exit 2, one line. Anything
# else is a bug and keeps its traceback. A run stopped by the non-finite guard exits 1 with its one-line reason.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                                               FileExistsError, IsADirectoryError, CheckpointError, ImportError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is one worth showing (not None/False, not already in the help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with a single line (not the usage block) on bad arguments."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    """Parse, call `main(args)`, map user errors to exit code 2 with one line."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser.parse_args(argv)
    try:
        main(args)
    except USER_ERRORS as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"{parser.prog}: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text}")
    return value
