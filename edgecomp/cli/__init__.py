"""The `edgecomp` command line.

Every outcome maps to one exit code of edgecomp.exit_codes (documented there and in README.md):
  0    success / within budget
  1    a budget was exceeded (gates only: verify, export)
  2    could not run: bad input, infeasible budget, missing dependency, failed check, unwritable
       output, or an internal error (a bug: its traceback is printed, with a request to report it)
  3    inconclusive (too noisy to decide; gates only)
  130  interrupted (Ctrl-C / SIGINT); what was kept is said on stderr

A user's mistake or the environment's refusal (an EdgecompError, a click usage error, an OSError on
a named file) is one `error: ...` line on stderr that says what to do, never a traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys
import traceback
from typing import NoReturn

import click

from edgecomp import __version__
from edgecomp.errors import EdgecompError
from edgecomp.exit_codes import ExitCode

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
    "edgecomp.cli.cache",
]

# What an interrupted command leaves behind ({out}: its output option's value).
_KEPT_ON_INTERRUPT = {
    "compress": "nothing is half-written: a new output directory ({out}) appears only when complete, and in an "
                "existing one each file is replaced whole; run the command again",
    "convert": "nothing is half-written: each file under {out} is written whole or not at all, and the ones "
               "finished before the interrupt are kept; run the command again",
    "export": "the stages finished under {out} are kept and are reused when you run the same command again; the "
              "interrupted stage left nothing half-written",
    "verify": "no report file was written; run the command again",
    "profile": "no report file was written; run the command again",
}
_OUTPUT_PARAMS = ("outdir", "out", "output")


def _error(message: str) -> None:
    """Each line of the message as `error: ...` on stderr."""
    for line in str(message).strip().splitlines() or [""]:
        click.secho(f"error: {line}", fg="red", err=True)


def _interrupted_message(command: click.Command | None, name: str | None, args: list[str]) -> str:
    if name not in _KEPT_ON_INTERRUPT:
        return "interrupted: nothing was written"
    out = "the output directory"
    try:  # re-read the command line (without callbacks or checks) for the output path
        with command.make_context(name, list(args), resilient_parsing=True) as sub:
            out = next((str(sub.params[p]) for p in _OUTPUT_PARAMS if sub.params.get(p)), out)
    except Exception:  # noqa: BLE001 - the message is a courtesy; the exit code is what matters
        pass
    return "interrupted: " + _KEPT_ON_INTERRUPT[name].format(out=out)


class EdgecompGroup(click.Group):
    """Maps what a command raises to one exit code (edgecomp.exit_codes): EdgecompError -> its
    `exit_code` with `error: ...`, KeyboardInterrupt -> INTERRUPTED, anything else -> INTERNAL_ERROR
    with the traceback (a bug: please report it)."""

    def main(self, *args, **kwargs):
        # Under torchrun: one process group for the command, the same exit code on every rank
        # (edgecomp.distributed.entry); a single process runs the command unchanged.
        from edgecomp.distributed import run_distributed

        return run_distributed(lambda: super(EdgecompGroup, self).main(*args, **kwargs))

    def invoke(self, ctx):
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except EdgecompError as exc:
            _error(str(exc))
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as exc:  # a usage error in a subcommand's options: one line
            sub = ctx.invoked_subcommand
            hint = f" (see `edgecomp {sub} --help`)" if sub else ""
            _error(exc.format_message() + hint)
            sys.exit(ExitCode.COULD_NOT_RUN)
        except SystemExit as exc:
            # Commands end through click (ctx.exit), so a bare SystemExit came from user code (a model
            # factory, a dataset callable, a forward): a gate must never pass because user code exited.
            _error(f"user code called sys.exit({exc.code!r}) during `edgecomp {ctx.invoked_subcommand}`; a model "
                   "factory, dataset callable or forward must return, not exit")
            sys.exit(ExitCode.COULD_NOT_RUN)
        except KeyboardInterrupt:
            name = ctx.invoked_subcommand
            if sys.stderr.isatty():
                click.echo("", err=True)  # end the line the terminal echoed ^C on
            _error(_interrupted_message(self.commands.get(name or ""), name, args[1:]))
            sys.exit(ExitCode.INTERRUPTED)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # click's own handling of a closed stdout
            if exc.filename is None:
                _internal_error()
            where = f": {exc.filename}" if exc.filename else ""
            _error(f"{exc.strerror or exc}{where} (the file system refused; check the path, free space and "
                   "permissions)")
            sys.exit(ExitCode.COULD_NOT_RUN)
        except Exception:  # noqa: BLE001 - everything else is our bug
            _internal_error()


def _internal_error() -> NoReturn:
    """A bug (not an EdgecompError): its traceback, a request to report it, and INTERNAL_ERROR."""
    traceback.print_exc()
    _error(f"internal error in edgecomp {__version__}, please report it with the traceback above "
           f"(exit code {int(ExitCode.INTERNAL_ERROR)}: could not run)")
    sys.exit(ExitCode.INTERNAL_ERROR)


@click.group(cls=EdgecompGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgecomp")
def main():
    """Fit a trained PyTorch model to an edge device: compress under its MAC/memory budgets,
    export for its runtime, and prove latency and accuracy on the target.

    \b
    Exit codes: 0 ok / within budget, 1 budget exceeded,
                2 could not run (bad input; also an internal error, with its traceback),
                3 inconclusive (too noisy to decide), 130 interrupted.
    """


for _name in COMMAND_MODULES:
    main.add_command(importlib.import_module(_name).command)
