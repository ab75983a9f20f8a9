"""Money as an operator reads it: every Decimal written as plain digits.

``str(Decimal("0E-8"))`` is ``0E-8`` and ``msgspec.to_builtins`` writes Decimals that way;
status, its JSON and the dashboard show ``0.00000000`` instead (issue 15: numbers printed
plainly). Plain digits keep the value exact: ``Decimal(plain(x)) == x``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec


def plain(value: Decimal) -> str:
    """A Decimal as plain digits, never in exponent form."""
    return format(value, "f")


def plain_builtins(obj: Any) -> Any:
    """``msgspec.to_builtins(obj)`` with every Decimal, at any depth, as ``plain``."""
    return _walk(msgspec.to_builtins(obj, builtin_types=(Decimal,)))


def _walk(x: Any) -> Any:
    if isinstance(x, Decimal):
        return plain(x)
    if isinstance(x, dict):
        return {k: _walk(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_walk(v) for v in x]
    return x
