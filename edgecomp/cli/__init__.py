"""The `edgecomp` command line.

Exit codes: 0 success / within budget, 1 budget exceeded, 2 could not run (bad input,
infeasible budget, missing dependency, failed check), 3 inconclusive (too noisy to decide).
"""

from __future__ import annotations

import importlib
import sys

import click

from edgecomp import __version__
from edgecomp.errors import EdgecompError

# Each module defines a click command (or group) named `command`.
COMMAND_MODULES = [
    "edgecomp.cli.devices",
    "edgecomp.cli.inspect",
    "edgecomp.cli.compress",
    "edgecomp.cli.evaluate",
    "edgecomp.cli.convert",
    "edgecomp.cli.export",
    "edgecomp.cli.profile",
    "edgecomp.cli.verify",
]


class EdgecompGroup(click.Group):
    """Turns EdgecompError into a one-line message and its exit code, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgecompError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=EdgecompGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgecomp")
def main():
    """Fit a trained PyTorch model to an edge device: compress under its MAC/memory budgets,
    export for its runtime, and prove latency and accuracy on the target.

    \b
    Exit codes: 0 ok / within budget, 1 budget exceeded,
                2 could not run, 3 inconclusive (too noisy to decide).
    """


for _name in COMMAND_MODULES:
    main.add_command(importlib.import_module(_name).command)
