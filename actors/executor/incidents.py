"""Incidents: surprising venue data recorded instead of crashed on.

An unexpected exchange-id collision, an order the venue no longer knows, a fill of no
order of ours: each is written to the ``incidents`` table (durable), published as an
``Incident`` on ``incident.<kind>``, and, where trading on cannot be right, latches the
bot (the safety latch) with a reason that names the incident. The executor itself stays
up: whatever its state, its command socket answers, so an operator can inspect, resolve
(``orders resolve``) and clear.
"""

from __future__ import annotations

from loguru import logger

from actors.executor.gates import Gates
from actors.executor.state import ExecState
from bus.messages import Incident

VANISHED_PREFIX = "vanished:"  # a safety latch set for vanished orders starts so


class Incidents:
    def __init__(self, s: ExecState, gates: Gates) -> None:
        self.s = s
        self.gates = gates

    def record(self, kind: str, detail: str, *, symbol: str = "", client_order_id: str = "",
               latch: str = "", latch_reason: str = "") -> int:
        """Durable first, then published; ``latch`` (e.g. "safety_latch") is set with
        ``latch_reason`` (default: the incident itself) unless it is already on."""
        s = self.s
        iid = s.db.record_incident(kind, detail, symbol=symbol, client_order_id=client_order_id,
                                   latch=latch, now=s.now())
        s.counters["incidents"] += 1
        s.counters[f"incident.{kind}"] += 1
        logger.error("executor: incident #{} {}: {}{}", iid, kind, detail,
                     f" -> {latch}" if latch else "")
        s.publish(Incident(id=iid, kind=kind, detail=detail, symbol=symbol,
                           client_order_id=client_order_id, latch=latch))
        if latch and not self.gates.latch(latch):
            self.gates.set_latch(latch, True, latch_reason or f"incident #{iid} {kind}: {detail}")
        return iid
