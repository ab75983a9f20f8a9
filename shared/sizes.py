"""Byte sizes for operators: ``500M``, ``20G``, ``1.5T``, ``4096`` (binary units: 1K =
1024 bytes, as ``du -h`` and ``df -h`` print them)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes; raises ValueError with a message for the operator."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is negative")
        return text
    m = _SIZE.match(str(text))
    if m is None:
        raise ValueError(f"{text!r} is not a size (e.g. 500M, 20G, 1.5T or a number of bytes)")
    try:
        value = Decimal(m.group(1)) * _UNITS[m.group(2).upper()]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a size") from None
    return int(value)


def fmt_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"
