"""Hard caps the executor checks itself before reserving (and so before sending) any
order, whatever risk approved: defence in depth against a bug in risk or a forged
SubmitOrder. Pure: the caller passes the counts and the clock reading.

- ``max_order_notional``: price × quantity in the quote currency (0 = off, benchmarks);
- ``max_open_orders_per_symbol``: orders the DB holds open (or pending) on the symbol;
- ``max_orders_per_minute``: orders reserved in the last 60 s (in memory: a restart
  starts a new window);
- ``allowed_symbols``: empty means the configured ``marketdata.symbols``.
A breach is refused with ``cap:<name>``, counted, and published as an incident.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Caps:
    max_order_notional: Decimal
    max_open_orders_per_symbol: int
    max_orders_per_minute: int
    allowed_symbols: frozenset[str]


def breach(caps: Caps, symbol: str, price: Decimal, quantity: Decimal, open_on_symbol: int,
           recent: deque[float], now: float) -> tuple[str, str] | None:
    """(cap name, detail) of the first cap this order would break, or None."""
    if symbol not in caps.allowed_symbols:
        return "allowed_symbols", f"{symbol} is not one of {sorted(caps.allowed_symbols)}"
    notional = price * quantity
    if caps.max_order_notional > 0 and notional > caps.max_order_notional:
        return "max_order_notional", f"notional {notional} > {caps.max_order_notional}"
    if 0 < caps.max_open_orders_per_symbol <= open_on_symbol:
        return ("max_open_orders_per_symbol",
                f"{open_on_symbol} open on {symbol}, cap {caps.max_open_orders_per_symbol}")
    while recent and now - recent[0] >= WINDOW_S:
        recent.popleft()
    if 0 < caps.max_orders_per_minute <= len(recent):
        return "max_orders_per_minute", f"{len(recent)} in the last 60 s, cap " \
                                        f"{caps.max_orders_per_minute}"
    return None
