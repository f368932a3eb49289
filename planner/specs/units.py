"""Parse quantities with units at the edge ("80GiB", "400Gb/s", "989TFLOPs", "10000gpuh", "30d").

Inside the planner everything is SI base units: bytes, FLOP, seconds, bytes/s, FLOP/s.
Each parser returns a float in those units or raises `PlannerInputError` naming `where`
(a file and key, or a flag) and the expected form.
"""

from __future__ import annotations

import math
import re

from planner.errors import PlannerInputError

# ASCII digits ([0-9], not \d): Python's \d and float() also take other scripts' digits ('１０gpuh' was read as 10).
_NUMBER = r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"

# Decimal (SI) and binary prefixes. "K" and "k" both mean 1e3 (people write both).
_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}

_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0,
    "min": 60.0, "m": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0, "day": 86400.0,
    "days": 86400.0, "w": 604800.0, "wk": 604800.0, "weeks": 604800.0,
    # A month as 30 days (the default deadline's unit); a year as 365 days.
    "mo": 2592000.0, "month": 2592000.0, "months": 2592000.0, "y": 31536000.0, "yr": 31536000.0, "year": 31536000.0,
    "years": 31536000.0,
}
# Thousands separators as the planner prints them ("10,000gpuh", "737,280 GPU-hours"): every number the
# tool prints is accepted back. Groups of three to the end of the digits: "1,0000" (1,000 or 10,000?) is refused,
# not read as its first group with the digit after it glued back on.
_GROUPED = re.compile(r"^\s*[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?![0-9,])(?:\.[0-9]*)?")


def _split(text: object, where: str, expected: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise PlannerInputError(f"{where}: expected {expected}, got {text!r}")
    if isinstance(text, (int, float)):
        return float(text), ""
    grouped = _GROUPED.match(str(text))
    if grouped:
        text = grouped.group(0).replace(",", "") + str(text)[grouped.end():]
    match = re.fullmatch(r"\s*" + _NUMBER + r"\s*([^\s\d].*?)?\s*", str(text))
    if not match:
        raise PlannerInputError(f"{where}: expected {expected}, got {text!r}")
    return float(match.group(1)), (match.group(2) or "")


def _finite_positive(value: float, where: str, expected: str, raw: object, allow_zero: bool) -> float:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise PlannerInputError(f"{where}: expected {expected} (a positive finite number), got {raw!r}")
    return value


def _prefix_scale(prefix: str, where: str, expected: str, raw: object) -> float:
    if prefix in _BINARY:
        return _BINARY[prefix]
    if prefix in _DECIMAL:
        return _DECIMAL[prefix]
    raise PlannerInputError(f"{where}: unknown unit prefix {prefix!r} in {raw!r}; expected {expected}")


def _refuse_bare(value: float, unit: str, where: str, expected: str, raw: object, meaning: str) -> None:
    """Spec keys named without a unit (`hbm`, `latency`) refuse a bare number other than 0: `hbm: 80` meant 80 GB,
    not 80 bytes, and `latency: 3` meant microseconds, not 3 s; each had passed as the base unit."""
    if not unit and value != 0:
        raise PlannerInputError(f"{where}: expected {expected} with explicit units, got {raw!r} (a bare number "
                                f"would be {meaning})")


def parse_bytes(text: object, where: str, allow_zero: bool = False, bare: bool = True) -> float:
    """'80GiB' -> 85899345920.0; '40GB' -> 4e10. Bare numbers are bytes; with `bare` False only 0 may be bare."""
    expected = "a size like '80GiB' or '40GB'"
    value, unit = _split(text, where, expected)
    if not bare:
        _refuse_bare(value, unit, where, expected, text, f"{value:g} bytes")
    if unit:
        match = re.fullmatch(r"([kKMGTPE]i?)?B", unit)
        if not match:
            raise PlannerInputError(f"{where}: expected {expected}, got {text!r}")
        value *= _prefix_scale(match.group(1) or "", where, expected, text)
    return _finite_positive(value, where, expected, text, allow_zero)


def _with_unit(text: object, where: str, expected: str, pattern: str) -> tuple[float, re.Match]:
    """The number of `text` and the match of its unit against `pattern`; the unit is required."""
    value, unit = _split(text, where, expected)
    if not unit:
        raise PlannerInputError(f"{where}: expected {expected} with explicit units, got {text!r}")
    match = re.fullmatch(pattern, unit)
    if not match:
        raise PlannerInputError(f"{where}: expected {expected}, got {text!r}")
    return value, match


def parse_bandwidth(text: object, where: str, allow_zero: bool = False) -> float:
    """'400Gb/s' -> 5e10 bytes/s; '25GB/s' -> 2.5e10; '1.6TB/s' -> 1.6e12. Bits are divided by 8."""
    expected = "a bandwidth like '400Gb/s' or '25GB/s'"
    value, match = _with_unit(text, where, expected, r"([kKMGTPE]i?)?(B|b|bit)(?:/s|ps)")
    value *= _prefix_scale(match.group(1) or "", where, expected, text)
    if match.group(2) in ("b", "bit"):
        value /= 8.0
    return _finite_positive(value, where, expected, text, allow_zero)


def parse_flops_rate(text: object, where: str, allow_zero: bool = False) -> float:
    """'989TFLOPs' or '989 TFLOP/s' -> 9.89e14 FLOP/s."""
    expected = "a compute rate like '989TFLOPs' or '312 TFLOP/s'"
    value, match = _with_unit(text, where, expected, r"([kKMGTPE])?FLOP(?:S|s|/s)")
    value *= _DECIMAL[match.group(1) or ""]
    return _finite_positive(value, where, expected, text, allow_zero)


def parse_power(text: object, where: str, allow_zero: bool = False) -> float:
    """'700W' or '10.2kW' -> watts."""
    expected = "a power like '700W' or '10.2kW'"
    value, match = _with_unit(text, where, expected, r"([kKM])?W")
    value *= _DECIMAL[match.group(1) or ""]
    return _finite_positive(value, where, expected, text, allow_zero)


def parse_duration(text: object, where: str, allow_zero: bool = False, bare: bool = True) -> float:
    """'30d' -> 2592000.0 s; '5us' -> 5e-6; '14 days'; bare numbers are seconds; with `bare` False only 0 may be
    bare."""
    expected = "a duration like '30d', '12h' or '5us'"
    value, unit = _split(text, where, expected)
    if not bare:
        _refuse_bare(value, unit, where, expected, text, f"{value:g} seconds")
    if unit:
        if unit not in _SECONDS:
            raise PlannerInputError(f"{where}: expected {expected}, got {text!r}")
        value *= _SECONDS[unit]
    return _finite_positive(value, where, expected, text, allow_zero)


def parse_count(text: object, where: str, allow_zero: bool = False) -> float:
    """'2T' -> 2e12; '1.4e12' -> 1.4e12; '70B' -> 7e10 (B = billion here: token and parameter counts)."""
    expected = "a count like '2T', '70B', '300M' or '1.4e12'"
    value, unit = _split(text, where, expected)
    if unit:
        scale = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}.get(unit)
        if scale is None:
            raise PlannerInputError(f"{where}: expected {expected}, got {text!r}")
        value *= scale
    return _finite_positive(value, where, expected, text, allow_zero)


def parse_gpu_hours(text: object, where: str) -> float:
    """'10000gpuh', '10k gpuh', '1e4 GPU-hours' -> GPU-seconds (SI inside: 10000 gpuh = 3.6e7 GPU-s)."""
    expected = "GPU-hours like '10000gpuh' or '10k gpuh'"
    value, match = _with_unit(text, where, expected, r"([kKM])?\s*(?:gpuh|gpu-?h(?:ours?)?|GPUh|GPU-?h(?:ours?)?)")
    value *= _DECIMAL[match.group(1) or ""]
    return _finite_positive(value, where, expected, text, allow_zero=False) * 3600.0


def parse_money(text: object, where: str) -> float:
    """'$2M' -> 2e6 dollars; '$150k'; '2000000'."""
    expected = "an amount of money like '$2M' or '$150k'"
    raw = str(text).strip()
    value, unit = _split(raw.lstrip("$"), where, expected)
    if unit:
        scale = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9}.get(unit)
        if scale is None:
            raise PlannerInputError(f"{where}: expected {expected}, got {text!r}")
        value *= scale
    return _finite_positive(value, where, expected, text, allow_zero=False)


def human_amount(value: float) -> str:
    """A budget or a spend in GPU-hours or dollars: '737,280' (digits grouped), but '1e+30' from 1e15 up, where a
    double's ~16 significant digits end and grouped digits would print its rounding noise
    ('1,000,000,000,000,000,019,884,624,838,656'). Below 100, three significant digits: whole units would print
    a 0.01 GPU-hour budget as '0 GPU-hours' and 36.4 as 36. Every form parses back (parse_gpu_hours, parse_money)."""
    if value is None or not math.isfinite(value):
        return "-"
    if 0 < abs(value) < 100:
        return f"{value:.3g}"
    return f"{value:,.0f}" if abs(value) < 1e15 else f"{value:.3g}"
