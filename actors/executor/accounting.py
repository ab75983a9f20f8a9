"""Position accounting from fills: the executor's use of the one PnL definition.

The arithmetic (average cost, realised PnL gross of fees, fees) lives in shared/pnl.py,
where status, risk, the reconciler and the backtest read it too; this module only
replays the executor's fills through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from shared.pnl import PositionState, apply_fill

__all__ = ["FillFact", "PositionState", "apply_fill", "replay"]


@dataclass(frozen=True, slots=True)
class FillFact:
    symbol: str
    side: str  # "buy" | "sell"
    price: Decimal
    quantity: Decimal
    fee: Decimal  # quote currency, >= 0


def replay(fills: Iterable[FillFact]) -> dict[str, PositionState]:
    """Positions per symbol from fills in execution order."""
    out: dict[str, PositionState] = {}
    for f in fills:
        out[f.symbol] = apply_fill(out.get(f.symbol, PositionState()), f.side, f.price,
                                   f.quantity, f.fee)
    return out
