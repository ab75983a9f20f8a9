"""PnL, defined once. Every figure the bot shows or acts on comes from here: the
executor's accounting, the reconciler's report, ``status``, risk's daily loss and the
backtest.

All amounts are in the symbol's quote currency (TRY for every BTCTurk pair we trade),
Decimal throughout:

- **realized**: from fills, GROSS of fees. A fill that reduces a position realises
  ``(fill price - average cost) * closed quantity`` (sign-aware); average cost is the
  volume-weighted price of the open quantity, fees excluded. A fill that crosses zero
  closes the old position and opens the rest at the fill price.
- **fees**: every fee paid, as a positive amount in the quote currency.
- **unrealized**: the open quantity marked at the **mark = mid = (best bid + best ask) / 2**
  of the latest book: ``(mark - average cost) * quantity``. Zero when flat or when no
  book is known (nothing to mark against; ``mark`` is then None).
- **net = realized + unrealized - fees**.

With these definitions net PnL equals the change of account equity (quote balance plus
base holdings valued at the mark), which tests/test_pnl.py checks on random fill
sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)
TWO = Decimal(2)
COST_QUANTUM = Decimal("1e-12")  # pro-rata cost of a partial close, in quote units


@dataclass(frozen=True, slots=True)
class PositionState:
    """One symbol's position from its fills. ``cost`` is the signed cost basis of the
    open quantity (sum of price*qty, reduced pro rata); keeping it instead of the
    average makes a full round trip exact: the last closing fill takes the remaining
    cost, so realised PnL equals the cash flow."""

    quantity: Decimal = ZERO  # signed: > 0 long
    cost: Decimal = ZERO  # signed like quantity
    realized_pnl: Decimal = ZERO  # GROSS of fees
    fees: Decimal = ZERO

    @property
    def avg_cost(self) -> Decimal:
        return self.cost / self.quantity if self.quantity else ZERO


def apply_fill(pos: PositionState, side: str, price: Decimal, qty: Decimal,
               fee: Decimal = ZERO) -> PositionState:
    """The position after one fill (``fee`` in the quote currency, >= 0)."""
    if side not in ("buy", "sell"):
        raise ValueError(f"bad side {side!r}")
    if qty <= 0 or price <= 0:
        raise ValueError("fill price and quantity must be positive")
    if fee < 0:
        raise ValueError("a fee is paid, never received")
    signed = qty if side == "buy" else -qty
    q, cost = pos.quantity, pos.cost
    realized = pos.realized_pnl
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


def mark_price(bid: Decimal | None, ask: Decimal | None) -> Decimal | None:
    """The mark: the mid of the best bid and ask; one side alone when the other is
    missing; None with no price at all."""
    if bid is not None and ask is not None:
        return (bid + ask) / TWO
    return bid if bid is not None else ask


@dataclass(frozen=True, slots=True)
class Pnl:
    realized: Decimal  # gross of fees
    unrealized: Decimal  # at ``mark``
    fees: Decimal
    mark: Decimal | None

    @property
    def net(self) -> Decimal:
        return self.realized + self.unrealized - self.fees


def unrealized(quantity: Decimal, avg_cost: Decimal, mark: Decimal | None) -> Decimal:
    if quantity == 0 or mark is None:
        return ZERO
    return (mark - avg_cost) * quantity


def position_pnl(quantity: Decimal, avg_cost: Decimal, realized: Decimal, fees: Decimal,
                 mark: Decimal | None) -> Pnl:
    return Pnl(realized, unrealized(quantity, avg_cost, mark), fees, mark)


def total(rows: Iterable[Pnl]) -> Pnl:
    """The sum over symbols (the mark has no meaning for a sum: None)."""
    realized = unreal = fees = ZERO
    for r in rows:
        realized += r.realized
        unreal += r.unrealized
        fees += r.fees
    return Pnl(realized, unreal, fees, None)
