"""Pure reconciler decisions: failure escalation, incident detection, mark-to-market.

Nothing here does I/O; the actor feeds it facts and acts on the answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from bus.messages import Position, SymbolPnl
from shared import pnl

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


def pnl_rows(positions: Iterable[Position],
             books: Mapping[str, tuple[Decimal | None, Decimal | None]]) -> list[SymbolPnl]:
    """Per symbol, by the one definition (shared/pnl.py): realised (gross) and fees from
    the executor's fills, unrealised at the mid of the latest book, net."""
    out = []
    for p in sorted(positions, key=lambda p: p.symbol):
        bid, ask = books.get(p.symbol, (None, None))
        figures = pnl.position_pnl(p.quantity, p.avg_cost, p.realized_pnl, p.fees,
                                   pnl.mark_price(bid, ask))
        out.append(SymbolPnl(symbol=p.symbol, position=p.quantity, avg_cost=p.avg_cost,
                             realized=figures.realized, unrealized=figures.unrealized,
                             fees=figures.fees, mark=figures.mark, net=figures.net))
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
