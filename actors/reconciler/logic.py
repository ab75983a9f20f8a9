"""Pure reconciler decisions: failure escalation, incident detection, mark-to-market.

Nothing here does I/O; the actor feeds it facts and acts on the answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from bus.messages import Position, SymbolPnl

ZERO = Decimal(0)


def update_failures(counts: Mapping[str, int], symbols: Iterable[str],
                    failed: Iterable[str]) -> dict[str, int]:
    """Consecutive failures per symbol: +1 for each failed symbol, reset to 0 for each
    symbol that succeeded. A symbol only in ``failed`` is counted too."""
    failed_set = set(failed)
    out = dict(counts)
    for s in set(symbols) | failed_set:
        out[s] = out.get(s, 0) + 1 if s in failed_set else 0
    return out


def breaches(counts: Mapping[str, int], threshold: int) -> list[str]:
    """Symbols whose consecutive failures reached the threshold (threshold 3: the third
    failure in a row latches)."""
    return sorted(s for s, n in counts.items() if n >= max(1, threshold))


def mark_price(quantity: Decimal, bid: Decimal | None, ask: Decimal | None) -> Decimal | None:
    """A long is marked at the bid, a short at the ask (what closing would get); the mid
    when that side is missing."""
    mid = (bid + ask) / 2 if bid is not None and ask is not None else None
    if quantity > 0:
        return bid if bid is not None else mid
    if quantity < 0:
        return ask if ask is not None else mid
    return mid


def unrealized(quantity: Decimal, avg_cost: Decimal, bid: Decimal | None,
               ask: Decimal | None) -> Decimal:
    """Zero when flat or with no price at all (nothing to mark against)."""
    if quantity == 0:
        return ZERO
    mark = mark_price(quantity, bid, ask)
    return ZERO if mark is None else (mark - avg_cost) * quantity


def pnl_rows(positions: Iterable[Position],
             books: Mapping[str, tuple[Decimal | None, Decimal | None]]) -> list[SymbolPnl]:
    """Per symbol: position, avg cost, realised (net of fees, from the executor's fills),
    unrealised at the latest book, fees."""
    out = []
    for p in sorted(positions, key=lambda p: p.symbol):
        bid, ask = books.get(p.symbol, (None, None))
        out.append(SymbolPnl(symbol=p.symbol, position=p.quantity, avg_cost=p.avg_cost,
                             realized=p.realized_pnl,
                             unrealized=unrealized(p.quantity, p.avg_cost, bid, ask),
                             fees=p.fees))
    return out


@dataclass
class IncidentDetector:
    """Says when something happened that deserves a reconcile round now."""

    executor_incarnation: str = ""
    gaps_seen: int = 0
    reasons: list[str] = field(default_factory=list)

    def heartbeat(self, incarnation: str) -> bool:
        changed = bool(self.executor_incarnation) and incarnation != self.executor_incarnation
        self.executor_incarnation = incarnation
        if changed:
            self.reasons.append("executor restarted")
        return changed

    def order_state(self, state: str, cid: str) -> bool:
        if state == "UNKNOWN":
            self.reasons.append(f"order {cid} UNKNOWN")
            return True
        return False

    def executor_state(self, to_state: str) -> bool:
        if to_state in ("DEGRADED_RECOVERY", "ERROR_FATAL", "ERROR_RETRYABLE"):
            self.reasons.append(f"executor {to_state}")
            return True
        return False

    def bus_gaps(self, total_gaps: int) -> bool:
        new = total_gaps > self.gaps_seen
        self.gaps_seen = total_gaps
        if new:
            self.reasons.append("bus gap")
        return new

    def take(self) -> list[str]:
        out, self.reasons = self.reasons, []
        return out
