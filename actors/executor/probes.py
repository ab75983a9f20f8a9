"""Resolving keys whose outcome is not known: ambiguous sends, and everything a previous
run left PENDING/UNKNOWN (startup recovery). Probes ask the venue (open orders, then all
orders since just before the key, by client order id); the decisions are the key state
machine's (idempotency.py) and the pure helpers' (recovery.py).

Keys remember the mode they were created in; a key from another exchange (paper vs live)
cannot be resolved here, so the executor stays in DEGRADED_RECOVERY (fail closed) and
says so; dry-run keys were never sent anywhere and resolve to FAILED at once. Recovery
ends when no key may still be on the venue and one full scan of the venue (orphans) is
done; only then are new orders accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.executor import idempotency as idem
from actors.executor.gates import Gates
from actors.executor.idempotency import KeyStatus, Phase
from actors.executor.orders import Orders
from actors.executor.recovery import exchange_view
from actors.executor.state import SUBMIT, ExecState, KeyId
from actors.executor.venues.base import find_by_client_id
from bus.messages import TERMINAL_ORDER_STATES
from shared.btcturk.errors import BtcTurkError, RejectedError
from shared.btcturk.models import ExchangeOrder


class Probes:
    def __init__(self, s: ExecState, gates: Gates, orders: Orders,
                 scan: Callable[[], Awaitable[None]]) -> None:
        self.s = s
        self.gates = gates
        self.orders = orders
        self.scan = scan  # one full poll of the venue (sync.poll_once)

    def load(self) -> None:
        """Every non-terminal key of a previous run is maybe-sent until probed."""
        s = self.s
        now = s.now()
        for row in s.db.keys_with_status("PENDING", "UNKNOWN"):
            k = (row.action_type, row.key)
            s.keys[k] = idem.loaded(KeyStatus(row.status), row.attempts, row.reason,
                                    row.exchange_order_id, row.settle_from, now)
            s.key_modes[k] = row.mode
        if s.keys:
            logger.warning("executor: {} unresolved keys from a previous run; resolving "
                           "before accepting orders", len(s.keys))
        if self.gates.read_block() == "dry_run":
            self.s.orphan_scan_done = True  # nothing to scan

    async def loop(self) -> None:
        s = self.s
        while True:
            now = s.now()
            due = [k for k, key in list(s.keys.items())
                   if idem.needs_probe(key, now) and k not in s.unresolvable]
            for k in due:
                if k in s.keys:
                    await self.probe(k)
            if s.recovering:
                await self._try_finish_recovery()
            # Keys become due on a backoff of >= 0.5 s: a 4 Hz idle tick is plenty
            # and keeps an idle executor from waking 10 times a second.
            await asyncio.sleep(0.02 if due else 0.25)

    async def probe(self, k: KeyId) -> None:
        s = self.s
        key_mode = s.key_modes.get(k, s.mode)
        inherited = s.recovering
        if key_mode == "dry-run" and s.mode != "dry-run":
            # Dry-run never sent anything anywhere.
            self._finish(k, None, inherited)
            return
        if key_mode != s.mode:
            s.unresolvable.add(k)
            logger.error("executor: key {} was created in {} mode and cannot be resolved in "
                         "{} mode; staying in recovery (start in {} mode to resolve it)",
                         k, key_mode, s.mode, key_mode)
            return
        order = s.db.get_order(k[1])
        if order is None:
            logger.error("executor: key {} has no order row; marking FAILED", k)
            self._finish(k, None, inherited)
            return
        if s.dry_run:
            found = order.exchange_order_id is not None
            self._finish(k, order.exchange_order_id if found else None, inherited, found=found)
            return
        if (block := self.gates.read_block()) is not None:
            self.orders.key_event(k, idem.ProbeFailed(s.now(), block))
            return
        try:
            if k[0] == SUBMIT:
                eo = await find_by_client_id(s.venue, order.symbol, order.client_order_id,
                                             order.created_at)
            else:
                assert order.exchange_order_id is not None
                eo = await self._order_or_none(order.exchange_order_id)
        except BtcTurkError as exc:
            s.counters["probe_errors"] += 1
            self.orders.key_event(k, idem.ProbeFailed(s.now(), exc.kind))
            return
        if inherited:
            s.faults.hit("during_recovery")
        if k[0] == SUBMIT:
            self._finish(k, eo.id if eo else None, inherited, found=eo is not None, eo=eo)
        else:
            done = eo is not None and exchange_view(eo)[0] in TERMINAL_ORDER_STATES
            self._finish(k, eo.id if eo else None, inherited, found=done, eo=eo)

    async def _order_or_none(self, order_id: int) -> ExchangeOrder | None:
        """A cancel's order by id; None when the exchange does not know it (it vanished):
        the cancel then had nothing to act on, and its key settles like any not-found
        probe (FAILED after the settle window) instead of being probed for as long as it
        is kept. Found by the deterministic simulation (vanished order + cancel timeout)."""
        try:
            return await self.s.venue.get_order(order_id)
        except RejectedError as exc:
            if exc.kind == "order_not_found":
                return None
            raise

    def _finish(self, k: KeyId, oid: int | None, inherited: bool, *, found: bool = False,
                eo: ExchangeOrder | None = None) -> None:
        s = self.s
        now = s.now()
        cid = k[1]
        if found and oid is not None and self.orders.id_collision(cid, oid, eo.pair if eo
                                                                 else ""):
            oid = None  # settled as found, but the taken id is not written
        if found:
            update: dict[str, Any] = {}
            if k[0] == SUBMIT and oid is None and eo is not None:
                update = {"state": exchange_view(eo)[0], "filled_quantity": eo.filled}
            elif k[0] == SUBMIT:
                state, filled = exchange_view(eo) if eo is not None else ("OPEN", Decimal(0))
                update = {"state": state, "filled_quantity": filled, "exchange_order_id": oid}
            elif eo is not None:
                update = {"state": exchange_view(eo)[0], "filled_quantity": eo.filled}
            self.orders.key_event(k, idem.ProbeFound(now, oid), **update)
            logger.info("executor: probe found {} as {} ({})", k, oid,
                        "inherited" if inherited else "ambiguous send")
            return
        new = self.orders.key_event(k, idem.ProbeNotFound(now))
        if new.status == KeyStatus.FAILED and k[0] == SUBMIT:
            s.db.update_order(cid, now, state="FAILED", reason=new.reason)
            self.orders.publish_order(cid, new.reason)
            logger.info("executor: {} not on the exchange after the settle window: FAILED", cid)

    async def _try_finish_recovery(self) -> None:
        s = self.s
        if not s.orphan_scan_done and self.gates.read_block() is None:
            try:
                await self.scan()
                s.orphan_scan_done = True
            except BtcTurkError as exc:
                s.log_once("recovery_poll", f"executor: recovery scan failed: {exc}")
                return
        elif not s.orphan_scan_done:
            s.log_once("recovery_blocked",
                       f"executor: cannot scan the exchange: {self.gates.read_block()}")
            return
        if any(key.phase == Phase.MAYBE_SENT for key in s.keys.values()):
            return
        s.recovering = False
        logger.info("executor: recovery complete")
        self.gates.sync_fsm("recovery complete")
        s.dirty = True
