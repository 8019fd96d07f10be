"""Errors of the measurement harness: part of the one hierarchy rooted at edgecomp.errors.EdgecompError,
whose exit code they inherit (ExitCode.COULD_NOT_RUN, 2). No base class is defined here."""

from __future__ import annotations

from edgecomp.errors import EdgecompError, MissingDependencyError, UserInputError


class TargetError(EdgecompError):
    """Running on the target failed (the agent crashed, returned garbage, ...)."""


class TargetConnectionError(TargetError):
    """The target could not be reached, or the connection dropped during the run."""


class TargetDependencyError(TargetError):
    """Something the agent needs is missing on the target (python, numpy, the runtime, an EP)."""


def agent_error_to_exception(error: dict, where: str) -> EdgecompError:
    """Map the agent's {"kind", "message", ...} to an edgecomp exception with a clear message."""
    kind = error.get("kind", "runtime_error")
    message = error.get("message", "unknown agent failure")
    if kind in ("missing_module", "missing_provider"):
        return TargetDependencyError(f"{message} [target: {where}]")
    if kind in ("bad_model", "bad_input", "bad_request"):
        return UserInputError(f"{message} [target: {where}]")
    return TargetError(f"measurement failed on {where}: {message}")


__all__ = [
    "MissingDependencyError",
    "TargetConnectionError",
    "TargetDependencyError",
    "TargetError",
    "agent_error_to_exception",
]
