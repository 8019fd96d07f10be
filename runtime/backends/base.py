"""The interface every in-process backend offers: run one batch, describe itself, release resources."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """A model ready to run on this machine.

    run(x) returns the first output for batch x (numpy in, numpy out) and returns only once the
    result is on the host, so timing one call times one complete inference.
    """

    runtime: str
    version: str
    fixed_batch: int | None

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
