"""click parameter types that check a value while the command line is parsed, before any work:
finite numbers in a range, seeds, sample amounts, and output paths that can be written.

A value out of range is a click usage error, which the CLI group prints as one `error:` line with
exit code 2; an output path that cannot be written raises UserInputError (edgecomp.io.check_writable).
Kept outside edgecomp.cli so that runtime.cli_support can use them without importing every command.
"""

from __future__ import annotations

import click


def _flag(param: click.Parameter | None) -> str:
    opts = getattr(param, "opts", None) or [getattr(param, "name", None) or "value"]
    return min(opts, key=lambda o: (not o.startswith("--"), len(o))) if len(opts) > 1 else opts[0]


class OutputPath(click.ParamType):
    """A path edgecomp will write: checked writable (edgecomp.io.check_writable) as it is parsed.

    kind: "file", "dir" or "any" (a file by suffix, else a directory)."""

    name = "path"

    def __init__(self, kind: str = "file"):
        self.kind = kind

    def convert(self, value, param, ctx):
        if value is None:
            return None
        from edgecomp.io import check_writable

        opts = getattr(param, "opts", None) or []
        option = "-o" if "-o" in opts else _flag(param)
        check_writable(value, kind=self.kind, option=option)
        return str(value)


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and +-inf (click's FloatRange lets nan through)."""

    name = "number"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if rv != rv or rv in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


class SampleAmount(click.ParamType):
    """A fraction in (0, 1] of the data, or a whole number of samples above 1."""

    name = "fraction|count"

    def convert(self, value, param, ctx):
        rv = FiniteFloat(min=0, min_open=True).convert(value, param, ctx)
        if rv > 1 and rv != int(rv):
            self.fail(f"{value!r}: above 1 it is a number of samples and must be whole (or give a fraction in "
                      "(0, 1])", param, ctx)
        return rv


SEED = click.IntRange(min=0, max=2**32 - 1)
COUNT = click.IntRange(min=1)  # iterations, batch sizes, samples, rounds
POSITIVE = FiniteFloat(min=0, min_open=True)  # durations, learning rates, tolerances, budgets
NON_NEGATIVE = FiniteFloat(min=0)  # epochs, warm-up seconds
FRACTION = FiniteFloat(min=0, max=1)  # accuracy drops
PERCENTILE = FiniteFloat(min=0, max=100, min_open=True, max_open=True)
