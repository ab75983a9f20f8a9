"""The reconciler actor: asks the executor to reconcile, judges drift, escalates.

Every ``interval_s`` and after incidents (an order UNKNOWN, an executor restart seen
in its heartbeat incarnation or FSM state, a bus gap) it sends ``ReconcileQuery`` to the
executor (which alone talks to the exchange), counts consecutive failures per symbol (an
undeliverable request fails every symbol), and once a symbol reaches
``failure_threshold`` sets the safety latch with ``SetLatch`` (persisted by the executor;
only an operator clears it). The executor is the one writer of latches: if SetLatch
cannot be delivered the reconciler retries it every round (nothing is sent while the
executor is unreachable anyway).
Each round publishes a ReconcileReport (key counts, drift, failures, PnL per symbol).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.reconciler.logic import IncidentDetector, breaches, pnl_rows, update_failures
from actors.runtime import Actor, main_for
from bus.messages import (
    BookSnapshot,
    Heartbeat,
    KeyCounts,
    OrderEvent,
    Packet,
    PortfolioSnapshot,
    ReconcileQuery,
    ReconcileReport,
    ReconcileResult,
    ReconcilerInfo,
    SetLatch,
    SnapshotQuery,
    StateTransition,
)
from bus.transport import RequestFailed
from bus.wiring import ClientLike


class ReconcilerActor(Actor):
    name = "reconciler"
    subscriptions = ("order.", "hb.executor", "state.executor", "md.book.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: dict[str, int] = {}
        self.books: dict[str, tuple[Decimal | None, Decimal | None]] = {}
        self.incidents = IncidentDetector()
        self._trigger = asyncio.Event()
        self.client: ClientLike | None = None
        self.latch_confirmed = False
        self.last_report: ReconcileReport | None = None

    async def setup(self) -> None:
        self.client = self.request_client(self.cfg.command_endpoint("executor"),
                                          server="executor",
                                          timeout_s=self.cfg.reconciler.request_timeout_s,
                                          retries=1)
        self.spawn(self._loop(), "reconcile")

    async def teardown(self) -> None:
        if self.client is not None:
            self.client.close()

    async def on_message(self, topic: str, packet: Packet) -> None:
        body = packet.body
        hit = False
        match body:
            case BookSnapshot(symbol=s, bids=bids, asks=asks):
                self.books[s] = (bids[0][0] if bids else None, asks[0][0] if asks else None)
            case Heartbeat(actor="executor"):
                hit = self.incidents.heartbeat(packet.env.incarnation)
            case OrderEvent(state=state, client_order_id=cid):
                hit = self.incidents.order_state(state, cid)
            case StateTransition(actor="executor", to_state=to_state):
                hit = self.incidents.executor_state(to_state)
        if self.sub is not None and self.incidents.bus_gaps(self.sub.stats.gaps):
            hit = True
        if hit:
            self.counters["incidents"] += 1
            self._trigger.set()

    async def _loop(self) -> None:
        rc = self.cfg.reconciler
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(self._trigger.wait(), timeout=rc.interval_s)
            except TimeoutError:
                pass
            # Incident bursts (e.g. a restart seen on several topics) make one round.
            gap = rc.incident_min_interval_s - (self._mono() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            self._trigger.clear()
            last = self._mono()
            await self.round(self.incidents.take())

    async def round(self, why: list[str]) -> ReconcileReport:
        assert self.client is not None
        self.counters["rounds"] += 1
        symbols = list(self.cfg.marketdata.symbols)
        details = [f"trigger: {', '.join(why)}"] if why else []
        result: ReconcileResult | None = None
        try:
            reply = await self.client.request(ReconcileQuery())
            if isinstance(reply, ReconcileResult):
                result = reply
            else:
                details.append(f"unexpected reply {type(reply).__name__}")
        except RequestFailed as exc:
            details.append(f"reconcile request failed: {exc}")
        if result is None:
            self.failures = update_failures(self.failures, [], symbols)
        else:
            self.failures = update_failures(self.failures, symbols, result.failed_symbols)
            details.extend(result.details)
        if result is None or not result.ok:
            self.counters["failures"] += 1
        snapshot = await self._snapshot(details)
        if snapshot is not None:
            self.latch_confirmed = snapshot.latches.safety_latch
        latch_set = await self._escalate(details)
        report = ReconcileReport(
            ok=result is not None and result.ok,
            keys=snapshot.keys if snapshot is not None else KeyCounts(),
            drift_found=result.drift_found if result else 0,
            drift_fixed=result.drift_fixed if result else 0,
            failures=dict(self.failures),
            pnl=pnl_rows(snapshot.positions, self.books) if snapshot is not None else [],
            details=details[:100],
            latch_set=latch_set,
        )
        self.publish(report)
        self.last_report = report
        if not report.ok or report.drift_found:
            logger.warning("reconciler: ok={} drift={}/{} failures={} {}", report.ok,
                           report.drift_found, report.drift_fixed, report.failures,
                           details[:5])
        return report

    async def _snapshot(self, details: list[str]) -> PortfolioSnapshot | None:
        assert self.client is not None
        try:
            reply = await self.client.request(SnapshotQuery())
        except RequestFailed as exc:
            details.append(f"snapshot failed: {exc}")
            return None
        return reply if isinstance(reply, PortfolioSnapshot) else None

    async def _escalate(self, details: list[str]) -> bool:
        """Set the safety latch once a symbol reached the threshold; True if it is set."""
        assert self.client is not None
        over = breaches(self.failures, self.cfg.reconciler.failure_threshold)
        if not over:
            return False
        if self.latch_confirmed:
            return True
        reason = (f"reconciler: {len(over)} symbol(s) failed to reconcile "
                  f"{self.cfg.reconciler.failure_threshold}+ times in a row: "
                  + ", ".join(f"{s}={self.failures[s]}" for s in over))
        logger.error("{}; setting the safety latch", reason)
        details.append(f"safety latch: {reason}")
        try:
            await self.client.request(SetLatch(latch="safety_latch", value=True, reason=reason))
            self.latch_confirmed = True
            self.counters["latches_set"] += 1
        except RequestFailed as exc:
            # The executor is the one writer of latches; while it is down nothing can be
            # sent anyway (risk's submits fail too). Retry SetLatch next round.
            self.counters["latch_request_failures"] += 1
            details.append(f"SetLatch failed: {exc}; retrying next round")
        return True

    def heartbeat_counters(self) -> dict[str, int]:
        return {"max_consecutive_failures": max(self.failures.values(), default=0)}

    def heartbeat_info(self) -> ReconcilerInfo:
        return ReconcilerInfo(latched=self.latch_confirmed)


def main() -> None:
    main_for(ReconcilerActor)


if __name__ == "__main__":
    main()
