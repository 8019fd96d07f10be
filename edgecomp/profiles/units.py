"""Budget strings <-> numbers.

MAC budgets (`parse_mac_budget`)
    "0.5", "50%"        fraction of the original model's MACs, in (0, 1]
    "30M", "1.2G", "500K", "2T", "2e9", "4000000"
                        absolute MACs (K = 1e3, M = 1e6, G = 1e9, T = 1e12; a plain number > 1 is absolute)

Memory budgets (`parse_memory_budget`), in bytes
    "0.5", "50%"        fraction of the original model's weight bytes, in (0, 1]
    "512KB", "2MB", "1GB"    decimal units (1 KB = 1000 B, as in SI)
    "512KiB", "2MiB", "1GiB" binary units (1 KiB = 1024 B, IEC)
    "2M", "2K"          same as 2MB / 2KB
    "123456", "123456B" bytes (a plain number > 1 is bytes)

"1" without a suffix is the fraction 1.0 (= the original size). A plain number above 1 is absolute:
"--mac-budget 1.5" is 1.5 MACs (infeasible for any model; the error says it was read as absolute and
how to write a fraction: `read_as_absolute`). It is not rejected up front, so that a script passing
an exact count ("4000000") keeps working.
"""

from __future__ import annotations

import math
import re

from edgecomp.errors import UserInputError

_NUMBER = r"(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.(?:[eE][+-]?[0-9]+)?)"
_COUNT_RE = re.compile(rf"^{_NUMBER}\s*(?P<suffix>[kKmMgGtT]?)$")
_BYTES_RE = re.compile(rf"^{_NUMBER}\s*(?P<suffix>(?:[kKmMgGtT](?:i?[bB])?|[bB])?)$")
_PERCENT_RE = re.compile(rf"^{_NUMBER}\s*%$")

_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_IEC = {"k": 1024.0, "m": 1024.0**2, "g": 1024.0**3, "t": 1024.0**4}

MAC_BUDGET_HELP = "a fraction like 0.5 or 50%, absolute MACs like 30M, 1.2G, 500K, 2e9, or none (unconstrained)"
MEMORY_BUDGET_HELP = "a fraction like 0.5 or 50%, bytes like 2MB, 2MiB, 512KB, 1GB, 123456, or none (unconstrained)"
UNCONSTRAINED = ("none",)  # a budget given as "none": no limit, whatever the device says


def _fraction(text: str, what: str, help_text: str) -> float | None:
    """The fraction written as 'x%' or as a plain number <= 1; None if `text` is not one."""
    match = _PERCENT_RE.match(text)
    if match:
        value = float(match["num"]) / 100.0
        if not 0.0 < value <= 1.0:
            raise UserInputError(f"{what} {text!r}: a percentage must be in (0%, 100%] ({help_text})")
        return value
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value):
        raise UserInputError(f"{what} {text!r} is not a finite number ({help_text})")
    if value <= 0:
        raise UserInputError(f"{what} must be positive, got {text!r} ({help_text})")
    return value if value <= 1.0 else None


def _check_absolute(value: float, text: str, what: str, help_text: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise UserInputError(f"{what} {text!r} is not a finite number ({help_text})")
    if value <= 0:
        raise UserInputError(f"{what} must be positive, got {text!r} ({help_text})")
    return value


def parse_count(text: str, what: str = "MAC budget") -> float:
    """'30M' -> 3e7; '2e9' -> 2e9; '500K' -> 5e5 (absolute counts only)."""
    s = str(text).strip()
    match = _COUNT_RE.match(s)
    if not match:
        raise UserInputError(f"cannot parse {what} {text!r}: expected {MAC_BUDGET_HELP}")
    value = float(match["num"]) * _SI[match["suffix"].lower()]
    return _check_absolute(value, s, what, MAC_BUDGET_HELP)


def parse_bytes(text: str, what: str = "memory budget") -> float:
    """'2MB' -> 2e6; '2MiB' -> 2097152; '123456' -> 123456.0 (absolute sizes only)."""
    s = str(text).strip()
    match = _BYTES_RE.match(s)
    if not match:
        raise UserInputError(f"cannot parse {what} {text!r}: expected {MEMORY_BUDGET_HELP}")
    suffix = match["suffix"].lower()
    if suffix in ("", "b"):
        scale = 1.0
    elif "i" in suffix:
        scale = _IEC[suffix[0]]
    else:
        scale = _SI[suffix[0]]
    return _check_absolute(float(match["num"]) * scale, s, what, MEMORY_BUDGET_HELP)


def _require_original(original: float, what: str) -> None:
    if original == 0:
        raise UserInputError(f"a fractional {what} is a fraction of the original model's size, and this model has "
                             "no decomposable layer (no Conv2d or Linear): there is nothing to compress "
                             "(see `edgecomp inspect MODEL`)")
    if not (original > 0 and math.isfinite(original)):
        raise UserInputError(f"a fractional {what} needs the original model's size, got {original!r}")


def read_as_absolute(text: str | None, flag: str = "--mac-budget", unit: str = "MACs") -> str:
    """For a budget written as a plain number above 1 (no unit, no %): a sentence saying it was read as
    absolute and how to give a fraction; "" for any other text. Infeasibility messages append it."""
    s = str(text or "").strip()
    try:
        value = float(s)
    except ValueError:
        return ""
    if not (math.isfinite(value) and value > 1):
        return ""
    example = "30M" if unit == "MACs" else "2MB"
    return (f"{flag} {s} was read as {value:g} absolute {unit}; give a fraction in (0, 1] like 0.5 (or 50%) "
            f"or an absolute value with a unit like {example}")


def parse_mac_budget(text: str, original_macs: float) -> float:
    """MAC budget string -> absolute MACs (fractions are of `original_macs`; "none" -> +inf, unconstrained)."""
    s = str(text).strip()
    if s.lower() in UNCONSTRAINED:
        return math.inf
    frac = _fraction(s, "MAC budget", MAC_BUDGET_HELP)
    if frac is not None:
        _require_original(original_macs, "MAC budget")
        return frac * float(original_macs)
    return parse_count(s, "MAC budget")


def parse_memory_budget(text: str, original_bytes: float) -> float:
    """Memory budget string -> bytes (fractions are of `original_bytes`; "none" -> +inf, unconstrained)."""
    s = str(text).strip()
    if s.lower() in UNCONSTRAINED:
        return math.inf
    frac = _fraction(s, "memory budget", MEMORY_BUDGET_HELP)
    if frac is not None:
        _require_original(original_bytes, "memory budget")
        return frac * float(original_bytes)
    return parse_bytes(s, "memory budget")


def format_count(value: float | None, unit: str = "") -> str:
    """3.2e7 -> '32.0M'; inf/None -> '-'."""
    if value is None or not math.isfinite(value):
        return "-"
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def format_bytes(value: float | None) -> str:
    """2e6 -> '2 MB' (decimal units, like the budgets); inf/None -> '-'."""
    if value is None or not math.isfinite(value):
        return "-"
    for suffix, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.0f} B"


def format_sci(value: float) -> str:
    """3e12 -> '3.0e12' (compact scientific notation for messages)."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    exponent = int(math.floor(math.log10(abs(value))))
    mantissa = value / 10**exponent
    if round(mantissa, 1) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.1f}e{exponent}"
