"""Sizes: written for people to read, and read from what people write."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def parse_size(value: int | float | str) -> int:
    """Bytes from ``2GiB``, ``512MiB``, ``1.5G`` (binary), ``2GB`` (decimal) or a number.

    ``G`` alone means GiB, as Docker and libvirt read it; only ``GB`` is decimal.
    """
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '2GiB'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (write e.g. 512MiB, 2GiB or 1073741824)")
    number, prefix, binary = match.groups()
    decimal = bool(prefix) and not binary and value.strip().upper().endswith("B")
    base = 1000 if decimal else 1024
    return int(float(number) * base ** _POWERS[prefix.upper()])
