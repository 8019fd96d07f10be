"""Module train/eval modes, for code that must not change the user's model."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put modules in eval() for the block and restore each submodule's own mode afterwards."""
    saved = [[(m, m.training) for m in module.modules()] for module in modules if module is not None]
    for module in modules:
        if module is not None:
            module.eval()
    try:
        yield
    finally:
        for states in saved:
            for m, training in states:
                m.training = training
