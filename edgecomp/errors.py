"""Error types shared by every stage. Each carries the CLI exit code it maps to.

Exit codes (documented in README.md):
  0  success / within budget
  1  a budget was exceeded (gates only)
  2  could not run: bad input, infeasible budget, missing dependency, failed check
  3  inconclusive (measurement too noisy to decide; gates only)
"""

from __future__ import annotations


class EdgecompError(Exception):
    """Base class: a failure with a message meant for the user (no traceback needed)."""

    exit_code = 2


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


def require(module: str, install: str, what: str | None = None):
    """Import an optional module lazily; raise MissingDependencyError naming the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(what or f"Python package '{module}' ({exc})", install) from exc
