"""What the executor tells the world about itself: the portfolio snapshot (the reply to
SnapshotQuery and the ``portfolio`` topic, published when something changed), the
heartbeat's counters and info, and the housekeeping loops that keep the DB small
(key pruning, WAL checkpoints on a worker thread)."""

from __future__ import annotations

import asyncio

from loguru import logger

from actors.executor.db import NON_TERMINAL_ORDER_STATES
from actors.executor.gates import Gates
from actors.executor.state import ExecState
from bus.messages import Balance, ExecutorInfo, KeyCounts, OpenOrder, PortfolioSnapshot, Position

CHECKPOINT_INTERVAL_S = 2.0
PUBLISH_INTERVAL_S = 0.5
PRUNE_INTERVAL_S = 60.0


class Snapshots:
    def __init__(self, s: ExecState, gates: Gates) -> None:
        self.s = s
        self.gates = gates

    async def answer(self, publish: bool = False) -> PortfolioSnapshot:
        """The reply to SnapshotQuery. ``publish``: announce it on ``portfolio`` too,
        which is the copy strategy and risk apply (a recorded input). The replay
        mirror answers with the latest recorded snapshot and never publishes: the
        recorded ones are replayed."""
        recorded = await self.s.venue.recorded_portfolio()
        if recorded is not None:
            return recorded
        snap = self.build()
        if publish and self.s.db_or_none is not None:
            self.s.dirty = False
            self.s.publish(snap)
        return snap

    def build(self) -> PortfolioSnapshot:
        s = self.s
        db = s.db
        counts = db.key_counts()
        return PortfolioSnapshot(
            positions=[Position(symbol=sym, quantity=p.quantity, avg_cost=p.avg_cost,
                                realized_pnl=p.realized_pnl, fees=p.fees)
                       for sym, p in db.positions(s.mode).items()],
            balances=[Balance(asset=a, free=f, locked=lk) for a, f, lk in db.balances(s.mode)],
            open_orders=[OpenOrder(client_order_id=o.client_order_id, intent_id=o.intent_id,
                                   symbol=o.symbol, side=o.side,  # type: ignore[arg-type]
                                   price=o.price, quantity=o.quantity,
                                   filled_quantity=o.filled_quantity, state=o.state,
                                   exchange_order_id=o.exchange_order_id,
                                   created_wall_ns=int(o.created_at * 1e9))
                         for o in db.orders_in_states(s.mode, NON_TERMINAL_ORDER_STATES)],
            latches=self.gates.view(),
            keys=KeyCounts(pending=counts["PENDING"], unknown=counts["UNKNOWN"],
                           failed=counts["FAILED"], committed=counts["COMMITTED"]),
            recovering=s.recovering,
        )

    def publish_now(self) -> None:
        """Announce at once (a latch change: listeners must not wait for the timer)."""
        self.s.dirty = False
        self.s.publish(self.build())

    async def publish_loop(self) -> None:
        s = self.s
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            if s.dirty and s.db_or_none is not None:
                s.dirty = False
                s.publish(self.build())

    async def checkpoint_loop(self) -> None:
        """WAL checkpoints on a worker thread (see ExecutorDB.checkpoint), so neither an
        order's reservation nor the event loop ever waits for one."""
        s = self.s
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            db = s.db_or_none
            if db is None:
                return
            await asyncio.to_thread(db.checkpoint)
            s.counters["wal_checkpoints"] += 1

    async def prune_loop(self) -> None:
        s = self.s
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            n = s.db.prune_keys(s.now())
            if n:
                s.counters["keys_pruned"] += n
                logger.info("executor: pruned {} expired keys", n)

    def heartbeat_counters(self) -> dict[str, int]:
        s = self.s
        base = {name: s.counters.get(name, 0)
                for name in ("submitted", "committed", "failed", "unknown", "ws_private_events",
                             "ws_refreshes", "ws_missed_events", "ws_login_failed",
                             "ws_connect_refused")}
        if s.db_or_none is not None:
            counts = s.db.key_counts()
            base.update(keys_pending=counts["PENDING"], keys_unknown=counts["UNKNOWN"],
                        keys_failed=counts["FAILED"], keys_committed=counts["COMMITTED"])
        base.update({f"http_{code}": n for code, n in s.venue.http_statuses().items()})
        base["rate_waits"] = s.venue.rate_waits()
        return base

    def heartbeat_info(self, db_path: str) -> ExecutorInfo:
        s = self.s
        latches = self.gates.view()
        return ExecutorInfo(
            kill_switch=latches.kill_switch,
            safety_latch=latches.safety_latch,
            paused=latches.paused,
            latch_reason=latches.reason,
            latch_set_at=dict(self.gates.set_at),
            recovering=s.recovering,
            mode=s.mode,
            db=db_path,
            unresolvable_keys=len(s.unresolvable),
            private_ws=s.venue.status(),
            halt=self.gates.halt_reason(),
            venue=s.venue.name,
        )
