"""Position accounting from fills (pure, Decimal only).

Conventions (used by the executor's PortfolioSnapshot and the reconciler's report):
- average cost is the volume-weighted price of the open quantity, fees excluded;
- a fill that reduces the position realises ``(price - avg_cost) * qty`` (sign-aware);
  a fill that crosses zero closes the old position and opens the rest at the fill price;
- ``fees`` is the total fee paid (quote currency); ``realized_pnl`` is NET of fees: every
  fee is subtracted from realised PnL when it is paid, so realised + unrealised is the
  true mark-to-market result;
- unrealised PnL is the reconciler's job (actors/reconciler/logic.py), from the book.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)
COST_QUANTUM = Decimal("1e-12")  # pro-rata cost of a partial close, in quote units


@dataclass(frozen=True, slots=True)
class PositionState:
    """``cost`` is the signed cost basis of the open quantity (sum of price*qty, reduced
    pro rata); keeping it instead of the average makes a full round trip exact: the last
    closing fill takes the remaining cost, so realised PnL equals the cash flow."""

    quantity: Decimal = ZERO  # signed: > 0 long
    cost: Decimal = ZERO  # signed like quantity
    realized_pnl: Decimal = ZERO  # net of fees
    fees: Decimal = ZERO

    @property
    def avg_cost(self) -> Decimal:
        return self.cost / self.quantity if self.quantity else ZERO


@dataclass(frozen=True, slots=True)
class FillFact:
    symbol: str
    side: str  # "buy" | "sell"
    price: Decimal
    quantity: Decimal
    fee: Decimal  # quote currency, >= 0


def apply_fill(pos: PositionState, side: str, price: Decimal, qty: Decimal,
               fee: Decimal = ZERO) -> PositionState:
    if side not in ("buy", "sell"):
        raise ValueError(f"bad side {side!r}")
    if qty <= 0 or price <= 0:
        raise ValueError("fill price and quantity must be positive")
    signed = qty if side == "buy" else -qty
    q, cost = pos.quantity, pos.cost
    realized = pos.realized_pnl - fee
    fees = pos.fees + fee
    if q == 0 or (q > 0) == (signed > 0):  # opening or adding
        return PositionState(q + signed, cost + signed * price, realized, fees)
    closing = min(abs(q), qty)
    # The closed part's cost: all of it on a full close (exact), pro rata otherwise.
    # Rounded to a fixed quantum so every later sum stays exact within 28 digits.
    closed_cost = cost if closing == abs(q) else (cost * closing / abs(q)).quantize(COST_QUANTUM)
    direction = 1 if q > 0 else -1
    realized += price * closing * direction - closed_cost
    new_q = q + signed
    if abs(new_q) <= abs(q) and (new_q == 0 or (new_q > 0) == (q > 0)):
        return PositionState(new_q, cost - closed_cost if new_q else ZERO, realized, fees)
    return PositionState(new_q, new_q * price, realized, fees)  # crossed zero


def replay(fills: Iterable[FillFact]) -> dict[str, PositionState]:
    """Positions per symbol from fills in execution order."""
    out: dict[str, PositionState] = {}
    for f in fills:
        out[f.symbol] = apply_fill(out.get(f.symbol, PositionState()), f.side, f.price,
                                   f.quantity, f.fee)
    return out
