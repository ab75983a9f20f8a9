"""Dry-run fill simulation (pure): a limit order fills when the book crosses it.

Rules (deliberately conservative): a buy fills against asks priced at or below its limit,
a sell against bids at or above it; the fill price is the order's limit price (no price
improvement), the quantity at most the crossing liquidity of the snapshot, so partial
fills happen; the fee is ``fee_bps`` of the notional, in the quote currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

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
