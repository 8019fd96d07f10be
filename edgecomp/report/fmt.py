"""Number formatting for people: SI prefixes, ratios, percentages; infinity reads as "none"."""

from __future__ import annotations

import math

UNBOUNDED = "none (unconstrained)"


def is_bounded(value) -> bool:
    """A budget that constrains something: a finite number (inf / None mean no budget)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def si(value: float, unit: str = "") -> str:
    """36387840 -> '36.4 M', 552404 B -> '552 kB' (3 significant digits, decimal prefixes)."""
    if not is_bounded(value):
        return UNBOUNDED
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def ratio(value: float | None) -> str:
    """A ratio to a reference: '0.30x', '211x', '0.0042x'."""
    if value is None or not math.isfinite(value):
        return "-"
    if value < 0.01:
        return f"{value:.2g}\u00d7"
    if value < 10:
        return f"{value:.2f}\u00d7"
    return f"{value:,.0f}\u00d7"


def pct(value: float | None, digits: int = 2) -> str:
    """0.892 -> '89.20%'."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def points(delta: float | None) -> str:
    """An accuracy difference in percentage points, signed: -0.0031 -> '-0.31 pt'."""
    if delta is None:
        return ""
    return f"{100 * delta:+.2f} pt".replace("-", "\u2212")


def ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g} ms"
