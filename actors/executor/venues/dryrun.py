"""The dry-run venue, and its fill simulation (``crossing_fill``, pure): a limit order
fills when the book crosses it.

Rules (deliberately conservative): a buy fills against asks priced at or below its limit,
a sell against bids at or above it; the fill price is the order's limit price (no price
improvement), the quantity at most the crossing liquidity of the snapshot, so partial
fills happen; the fee is ``fee_bps`` of the notional, in the quote currency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from actors.executor.venues.local import LocalVenue
from bus.messages import BookSnapshot, Msg, PortfolioSnapshot

if TYPE_CHECKING:
    from actors.executor.db import OrderRow


Level = tuple[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class SimFill:
    price: Decimal
    quantity: Decimal
    fee: Decimal


def crossing_fill(side: str, limit: Decimal, remaining: Decimal, bids: Sequence[Level],
                  asks: Sequence[Level], fee_bps: Decimal) -> SimFill | None:
    if remaining <= 0:
        return None
    if side == "buy":
        liquidity = sum((amt for price, amt in asks if price <= limit), Decimal(0))
    elif side == "sell":
        liquidity = sum((amt for price, amt in bids if price >= limit), Decimal(0))
    else:
        raise ValueError(f"bad side {side!r}")
    qty = min(remaining, liquidity)
    if qty <= 0:
        return None
    return SimFill(limit, qty, limit * qty * fee_bps / Decimal(10000))


class DryRunVenue(LocalVenue):
    """Dry-run: orders are acknowledged at once with local ids and never leave the
    process; they fill when a book on the bus crosses them (``crossing_fill``). There is
    no exchange to read, so probes, polls and reconcile say so (``read_block``)."""

    name = "dry-run"
    sends = True
    follows = True
    subscriptions = ("md.book.",)

    def __init__(self, fee_bps: Decimal, first_id: int) -> None:
        self.fee_bps = fee_bps
        self._seq = first_id  # order ids and fill ids: above any earlier run's

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def submit(self, symbol: str, side: str, quantity: Decimal, price: Decimal,
                     client_order_id: str) -> int:
        return self._next()

    async def cancel(self, order_id: int) -> None:
        return None

    def on_bus(self, body: Msg, open_orders: Callable[[str], list[OrderRow]]
               ) -> list[tuple[OrderRow, SimFill, str]]:
        """Fills of our open orders that this book crosses, each with a fresh trade id."""
        if not isinstance(body, BookSnapshot):
            return []
        out = []
        for row in open_orders(body.symbol):
            if row.state not in ("OPEN", "PARTIAL") or row.exchange_order_id is None:
                continue
            fill = crossing_fill(row.side, row.price, row.quantity - row.filled_quantity,
                                 body.bids, body.asks, self.fee_bps)
            if fill is not None:
                out.append((row, fill, f"dry-{self._next()}"))
        return out

    async def recorded_portfolio(self) -> PortfolioSnapshot | None:
        return None

    async def close(self) -> None:
        return None
