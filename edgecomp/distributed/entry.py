"""The CLI's wrapper: one process group per command, every rank exits with the same code.

Exit-code agreement uses the store, not a collective: each rank publishes its code and takes the
largest of all (edgecomp.exit_codes orders them so: 0 < 1 < 2 < 3 < 130). A rank that failed waits
only EXIT_WAIT_S for the others, since they may be blocked in a collective it will never join; it
then exits with its own code and torchrun stops the rest. Rank 0 leaves last (a rank-0-hosted store
must outlive the others' reads).

Only rank 0 prints to stdout (the others' stdout goes to os.devnull unless EDGECOMP_ALL_RANKS_STDOUT=1)
and only rank 0 shows progress bars; stderr is every rank's (torchrun --local-ranks-filter 0 hides
the others').
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Callable

from edgecomp.distributed.group import Dist, init, shutdown, store

EXIT_WAIT_S = 60.0


def _quiet_others(dist: Dist) -> None:
    if dist.is_main or os.environ.get("EDGECOMP_ALL_RANKS_STDOUT") == "1":
        return
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    os.environ["TQDM_DISABLE"] = "1"


def agree_exit_code(code: int, dist: Dist) -> int:
    """The largest exit code of all ranks (this rank's own if the others do not answer in time)."""
    if not dist.active:
        return code
    from edgecomp.distributed.channel import wait_timeout

    s = store()
    s.set(f"edgecomp/exit/{dist.rank}", str(code))
    keys = [f"edgecomp/exit/{r}" for r in range(dist.world_size)]
    try:
        s.wait(keys, wait_timeout() if code == 0 else datetime.timedelta(seconds=EXIT_WAIT_S))
        agreed = max(int(s.get(k)) for k in keys)
        if s.add("edgecomp/exit/read", 1) == dist.world_size:
            s.set("edgecomp/exit/all-read", "1")
        if dist.is_main:
            s.wait(["edgecomp/exit/all-read"], datetime.timedelta(seconds=EXIT_WAIT_S))
        return agreed
    except Exception:  # noqa: BLE001 - a rank that never answers: our own code, torchrun stops the rest
        return code if code else 2


def _code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_distributed(command: Callable[[], object]) -> object:
    """Run `command` (a click main in standalone mode, which ends in SystemExit) in this process's
    group; outside torchrun (world 1) it is just command(). A process group that cannot start (a bad
    WORLD_SIZE / RANK, a backend this torch lacks) is the user's environment: one `error:` line, exit 2."""
    from edgecomp.errors import EdgecompError

    try:
        dist = init()
    except EdgecompError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    if not dist.active:
        return command()
    _quiet_others(dist)
    code = 0
    try:
        command()
    except SystemExit as exc:
        code = _code(exc)
    except BaseException as exc:  # noqa: BLE001 - e.g. KeyboardInterrupt outside click's handling
        from edgecomp.distributed.channel import exit_code_of

        code = exit_code_of(exc)
    code = agree_exit_code(code, dist)
    sys.stdout.flush()
    shutdown()
    sys.exit(code)
