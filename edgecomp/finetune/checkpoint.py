"""Checkpoints of fine-tuning and LC runs, so that a killed run continues where it stopped (--resume).

One file per phase ("finetune", "lc") beside the run's output: `<base>.<phase>.pt`, written every
`every` optimizer steps with edgecomp.io.atomic_path (a kill leaves the previous checkpoint whole).
The file is torch.save of tensors and plain values only (dicts, lists, numbers, strings, None) and is
read back with torch.load(weights_only=True): no pickled objects, no code runs on load.

A checkpoint records a fingerprint of the settings that decide the run (step count, seed, learning
rate, batch size, parameter shapes, ...); resuming with other settings is refused (UserInputError)
rather than continuing a different run. `remove()` deletes the files this run's phases wrote (or
resumed from), never anything else.

Many processes (edgecomp.distributed): rank 0 alone writes and deletes the files (its state is every
rank's: the weights, optimizer and RNG states are the same on all ranks, BatchNorm statistics are
averaged before each save); every rank reads them on resume.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from edgecomp.distributed import Dist, current
from edgecomp.errors import UserInputError
from edgecomp.io import atomic_path, to_jsonable

FORMAT = "edgecomp-checkpoint/1"
log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """base: the path the phase files are named after (e.g. OUTDIR's hidden sibling `.OUT.checkpoint`).
    every: optimizer steps between writes (None: never write). resume: read an existing file first."""

    base: Path
    every: int | None = None
    resume: bool = False
    log: Callable[[str], None] | None = None  # where "resuming ... from step N" goes (the CLI: stderr)
    resumed: dict = field(default_factory=dict)  # {phase: the step it resumed from}, for the report
    dist: Dist | None = None  # the processes of the run (None: edgecomp.distributed.current()); rank 0 writes
    _touched: set = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        if self.every is not None and (isinstance(self.every, bool) or int(self.every) < 1):
            raise UserInputError(f"--checkpoint-every must be >= 1, got {self.every!r}")

    def path(self, phase: str) -> Path:
        return self.base.with_name(f"{self.base.name}.{phase}.pt")

    def due(self, step: int, last: int) -> bool:
        """Write at optimizer step `step` when `every` steps have passed since the last write."""
        return self.every is not None and step - last >= self.every

    def _is_main(self) -> bool:
        return (self.dist or current()).is_main

    def save(self, phase: str, fingerprint: dict, state: dict) -> Path:
        """Write `state` (rank 0 only; the other ranks return the path without writing)."""
        path = self.path(phase)
        if not self._is_main():
            return path
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "phase": phase, "fingerprint": _plain(fingerprint), **state}, tmp)
        self._touched.add(path)
        log.info("checkpoint: %s at step %s", path, state.get("step"))
        return path

    def load(self, phase: str, fingerprint: dict) -> dict | None:
        """The saved state of `phase` when resuming and a file is there, else None (a fresh start)."""
        path = self.path(phase)
        if not self.resume or not path.is_file():
            if self.resume:
                self._say(f"resume: no {phase} checkpoint at {path}; starting {phase} from step 0")
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: say which, do not guess
            raise UserInputError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); delete it "
                                 "or run without --resume") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("phase") != phase:
            raise UserInputError(f"{path} is not an edgecomp {phase} checkpoint; delete it or run without --resume")
        saved, now = state.get("fingerprint") or {}, _plain(fingerprint)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            raise UserInputError(f"{path} was written by a run with other settings ({', '.join(changed)} changed); "
                                 "rerun with the same settings, or delete it (or drop --resume) to start afresh")
        self._touched.add(path)
        self.resumed[phase] = int(state.get("step", 0))
        self._say(f"resume: continuing {phase} from step {self.resumed[phase]} ({path})")
        return state

    def _say(self, message: str) -> None:
        log.info(message)
        if self.log is not None:
            self.log(message)

    def remove(self) -> None:
        """Delete the checkpoint files this run wrote or resumed from (rank 0; the others forget them)."""
        for path in sorted(self._touched) if self._is_main() else []:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._touched.clear()


def _plain(value):
    """JSON-like values (tuples as lists), so that a fingerprint compares equal after a save/load."""
    return to_jsonable(value)


def rng_state(device: torch.device) -> dict:
    """The global RNG states a run draws from (CPU, and the CUDA device's when it runs there)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def to_device(state, device: torch.device):
    """An optimizer / model state with its tensors on `device` (checkpoints load on the CPU)."""
    from edgecomp.metrics import map_tensors

    return map_tensors(lambda tensor: tensor.to(device), state)


def checkpoint_for(outdir: str | os.PathLike | None, every: int | None, resume: bool,
                   path: str | os.PathLike | None = None, log: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The run's Checkpoint: named `path`, else OUTDIR's hidden sibling `.OUT.checkpoint` (OUTDIR itself
    appears only complete, and holds only edgecomp's listed outputs: edgecomp.outdir); None when
    neither --checkpoint-every nor --resume is asked for."""
    if every is None and not resume:
        return None
    if path is None:
        if not outdir:
            raise UserInputError("checkpoint_every / resume need a checkpoint path (checkpoint=PATH)")
        out = Path(outdir)
        path = out.parent / f".{out.name}.checkpoint"
    return Checkpoint(Path(path), every, bool(resume), log=log)
