"""The one hierarchy of user-facing errors. Each carries the exit code it maps to (edgecomp.exit_codes).

An EdgecompError (or subclass) is the user's mistake or the environment's refusal: the CLI prints its
message as one `error: ...` line and exits with its `exit_code` (2: could not run). Anything else
raised is a bug in edgecomp: it keeps its traceback (edgecomp.cli). Harness errors (TargetError, ...)
live in edgecomp.runtime.errors and subclass EdgecompError.
"""

from __future__ import annotations

from edgecomp.exit_codes import ExitCode


class EdgecompError(Exception):
    """Base class: a failure with a message meant for the user (no traceback needed)."""

    exit_code: int = ExitCode.COULD_NOT_RUN


class UserInputError(EdgecompError):
    """A model/data/profile spec, file or flag the user gave is wrong."""


class UnsafeModelError(UserInputError):
    """A file would need unrestricted unpickling to load."""


class InfeasibleBudgetError(EdgecompError):
    """The requested budget is below the smallest model the scheme can build."""

    def __init__(self, message: str, *, min_macs: float | None = None, min_params: float | None = None):
        super().__init__(message)
        self.min_macs = min_macs
        self.min_params = min_params


class MissingDependencyError(EdgecompError):
    """An optional dependency is not installed; the message names what to install."""

    def __init__(self, what: str, install: str):
        super().__init__(f"{what} is not available: install it with `{install}`")
        self.install = install


class VerificationError(EdgecompError):
    """A numerical or structural check on a produced artifact failed."""
