"""The one place edgecomp's process exit codes are defined (README.md, "Exit codes", documents them).

    code  meaning
    0     OK                success: every gate is within budget (or there was nothing to gate)
    1     BUDGET_EXCEEDED   a gate FAILed: with confidence, a latency or accuracy budget is broken
    2     COULD_NOT_RUN     bad input, infeasible budget, missing dependency, unreachable target or a
                            failed check: one `error: ...` line that says what to do. An internal error
                            (a bug, not an EdgecompError) also exits 2, but keeps its traceback and asks
                            to be reported: INTERNAL_ERROR is that alias, as the README documents.
    3     INCONCLUSIVE      the evidence does not decide a gate (interval straddles the budget, too few
                            samples)
    130   INTERRUPTED       Ctrl-C / SIGINT (128 + 2, as a shell reports it)

Gates add up to 0, 1 or 3 (edgecomp.runtime.gates.exit_code); 2 and 130 come from the CLI group
(edgecomp.cli.EdgecompGroup) when a command raises. The on-device agent (runtime/agent.py) is a
stdlib-only file and cannot import this module; its own codes are kept consistent by tests.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """An outcome's exit status (an int: `sys.exit(ExitCode.OK)` and `code == 0` both work)."""

    OK = 0
    BUDGET_EXCEEDED = 1
    COULD_NOT_RUN = 2
    INCONCLUSIVE = 3
    INTERRUPTED = 130
    INTERNAL_ERROR = 2  # alias of COULD_NOT_RUN: a bug cannot run either; told apart by its traceback


OK = ExitCode.OK
BUDGET_EXCEEDED = ExitCode.BUDGET_EXCEEDED
COULD_NOT_RUN = ExitCode.COULD_NOT_RUN
INCONCLUSIVE = ExitCode.INCONCLUSIVE
INTERRUPTED = ExitCode.INTERRUPTED
INTERNAL_ERROR = ExitCode.INTERNAL_ERROR

__all__ = ["BUDGET_EXCEEDED", "COULD_NOT_RUN", "INCONCLUSIVE", "INTERNAL_ERROR", "INTERRUPTED", "OK", "ExitCode"]
