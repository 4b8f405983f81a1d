"""Exceptions raised by grain-bench. Every user mistake is a ``GrainBenchError``; the CLI turns it into one line and
exit 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GrainBenchError(Exception):
    """Base class of every error grain-bench raises on purpose."""


class UsageError(GrainBenchError, ValueError):
    """Bad input from the user: an option, a value or a file that is not what was expected."""


class DataError(GrainBenchError):
    """A data file is missing or malformed, or a hub download failed."""


class TrainingDiverged(GrainBenchError):
    """A loss or a weight became NaN or infinite during training (the run is recorded as an error)."""


class DuplicateNameError(GrainBenchError):
    """Two plugins registered the same name."""


class _UnknownNameError(UsageError, KeyError):
    """A name no plugin registered: a ``UsageError`` (bad input, exit 2) and a ``KeyError`` (a failed lookup)."""

    kind = "name"

    def __init__(self, name: str, choices: Iterable[str]):
        self.name = name
        self.choices = sorted(choices)
        close = difflib.get_close_matches(name, self.choices, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        message = f"unknown {self.kind} {name!r}.{hint} Choices: {', '.join(self.choices) or '(none registered)'}"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class UnknownMethodError(_UnknownNameError):
    """A method name that no plugin registered."""

    kind = "method"


class UnknownTaskError(_UnknownNameError):
    """A task or suite name that no plugin registered."""

    kind = "task"


class UnknownBackboneError(_UnknownNameError):
    """A named backbone that no plugin registered (hub ids and paths are not checked here)."""

    kind = "backbone"


class UnknownExecutorError(_UnknownNameError):
    """An executor name that no plugin registered."""

    kind = "executor"


class UnknownExporterError(_UnknownNameError):
    """A table format that no plugin registered."""

    kind = "format"


class UnknownRuntimeError(_UnknownNameError):
    """An inference runtime that no plugin registered."""

    kind = "runtime"


class UnknownRecipeError(_UnknownNameError):
    """A recipe name that does not exist."""

    kind = "recipe"
