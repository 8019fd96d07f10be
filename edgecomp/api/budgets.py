"""Budgets as Python values: None means the device's, math.inf unconstrained, a number <= 1 a
fraction of the original model, a number > 1 an absolute amount, a string the CLI's syntax."""

from __future__ import annotations

import math

from edgecomp.errors import UserInputError


def budget_text(value: float | str | None, name: str) -> str | None:
    """The CLI's budget text for `value` (None stays None: the device's budget applies)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserInputError(f"{name} must be a number, a string like '50%' or '30M', math.inf or None, "
                             f"got {type(value).__name__}")
    if math.isinf(value) and value > 0:
        return "none"
    if not (math.isfinite(value) and value > 0):
        raise UserInputError(f"{name} must be positive (or math.inf for unconstrained), got {value}")
    return repr(float(value))
