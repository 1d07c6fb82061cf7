"""Human-readable quantities: formatting counts and bytes, parsing ``"4.2G"`` / ``"25MiB"``."""

from __future__ import annotations

import re

from ._errors import InvalidInputError

_SI = [(10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K")]
_BINARY = [(2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")]

_PARSE_FACTORS = {
    "": 1,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "KB": 10**3, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
    "B": 1,
}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def format_count(value: float, unit: str = "") -> str:
    """``4089184256`` -> ``"4.09 G"`` (SI prefixes, three significant digits)."""
    sep = " " if unit else ""
    for factor, prefix in _SI:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}{sep}{unit}"
    return f"{int(value)}{sep}{unit}"


def format_bytes(value: float) -> str:
    """``102760448`` -> ``"98 MiB"`` (binary prefixes, three significant digits)."""
    for factor, prefix in _BINARY:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{int(value)} B"


def parse_quantity(text: str | int | float) -> float:
    """Parse ``"4.2G"``, ``"26M"``, ``"25MiB"``, ``"1.5e9"`` or a number into a number.

    SI suffixes (K, M, G, T, also kB/MB/GB) are powers of 1000; binary suffixes
    (KiB, MiB, GiB, TiB) are powers of 1024. A trailing unit word such as
    ``MACs`` or ``params`` after the suffix is not accepted: pass ``"4.2G"``.
    """
    if isinstance(text, bool):
        raise InvalidInputError(f"expected a number or a string like '4.2G', got {text!r}")
    if isinstance(text, (int, float)):
        return text
    match = _NUMBER.match(str(text))
    if not match or match.group(2) not in _PARSE_FACTORS:
        raise InvalidInputError(
            f"cannot read {text!r} as a quantity: write a number with an optional suffix, "
            "e.g. '4.2G', '26M', '512K' (powers of 1000) or '25MiB', '1.5GiB' (powers of 1024)"
        )
    value = float(match.group(1)) * _PARSE_FACTORS[match.group(2)]
    return int(value) if value.is_integer() else value
