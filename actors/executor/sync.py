"""Following the venue: order state and fill import, TTL cancels, balances, private-event
refreshes, dry-run fills, and reconcile (the reconciler's on-demand full comparison).

Order status and fills are followed by REST polling (open orders + user trades every poll
interval, a final status by order id), woken by the venue's private events: an event for
one of our orders (our client-id prefix, or an exchange id we know) triggers an immediate
refresh of that order and of user trades, so state changes and fills keep one code path
(fills deduplicated by trade id); an insert of an order the send's answer already
recorded as OPEN refreshes nothing. Refreshes are coalesced: one in flight, events
meanwhile make exactly one more. The poll's cadence is the venue's (slower while its
private events are trusted, see venues/btcturk.py).
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.executor import idempotency as idem
from actors.executor.accounting import PositionState, apply_fill
from actors.executor.db import FillRow, OrderRow
from actors.executor.gates import Gates
from actors.executor.idempotency import KeyStatus, Phase
from actors.executor.incidents import VANISHED_PREFIX, Incidents
from actors.executor.orders import Orders
from actors.executor.outage import LIVENESS_S, Outage
from actors.executor.recovery import (
    Drift,
    DriftRun,
    balance_drift,
    diff_open_orders,
    drift_latches,
    drift_runs,
    exchange_view,
    is_ours,
    ttl_expired,
)
from actors.executor.state import CANCEL, SUBMIT, ExecState
from actors.executor.tradewindow import TradeWindow
from actors.executor.venues.base import find_by_client_id
from bus.messages import Fill, Msg, ReconcileResult
from shared.btcturk.errors import BtcTurkError, RejectedError
from shared.btcturk.models import ExchangeOrder, UserTrade
from shared.btcturk.ws import OrderDelete, OrderInsert, OrderMatch
from shared.plain import plain

# A private event's refresh that failed (429, a timeout) is tried again this soon, not
# left to the slow poll: the event said money moved (an order filled), and until its
# trades are read the DB holds a FILLED order without its fill, a position that is wrong.
REFRESH_RETRY_S = 1.0


class Sync:
    def __init__(self, s: ExecState, gates: Gates, orders: Orders,
                 incidents: Incidents, outage: Outage) -> None:
        self.s = s
        self.gates = gates
        self.orders = orders
        self.incidents = incidents
        self.outage = outage
        # Orders held open here that the venue could not find: since when (wall s).
        self._missing_since: dict[str, float] = {}
        self._unknown_fills: set[str] = set()  # trade ids already reported
        self.trade_window = TradeWindow()
        self._last_balance_fetch = 0.0
        # What this incarnation last wrote to the balances table (None: nothing yet).
        self._balances_written: list[tuple[str, Decimal, Decimal]] | None = None
        self._balance_baseline: dict[str, Decimal] | None = None  # loaded on first use
        # asset -> its run of settled reconciles with drift beyond tolerance (drift_runs)
        self._drift_runs: dict[str, DriftRun] = {}
        self._refresh_cids: set[str] = set()
        self._refresh_wanted = asyncio.Event()

    # --- polling ----------------------------------------------------------------------
    async def poll_loop(self) -> None:
        # Short sleeps with the interval re-read each time: when the private socket goes
        # down (or misses an event), an overdue slow poll happens at once.
        s = self.s
        last = s.mono()
        while True:
            now = s.mono()
            s.venue.check(now)
            if self.outage.active:
                interval = s.cfg.executor.order_poll_interval_s
            else:
                interval = s.venue.poll_interval()
            due = last + interval
            quiet_since = self.outage.last_ok_mono
            if now < due and now - quiet_since < LIVENESS_S:
                await asyncio.sleep(min(0.25, due - now, LIVENESS_S - (now - quiet_since)))
                continue
            if self.gates.read_block() is not None or s.recovering:
                last = now
                await asyncio.sleep(0.25)
                continue
            try:
                if self.outage.active:
                    last = now
                    await self._try_back()
                elif now >= due:
                    last = now
                    await self.poll_once(watch=True)
                    s.counters["polls"] += 1
                else:
                    # Nothing heard for LIVENESS_S: one cheap read proves the venue is
                    # there (an outage shows within seconds even between slow polls).
                    await self.fetch_balances()
                    s.counters["liveness_reads"] += 1
            except BtcTurkError as exc:
                s.counters["poll_errors"] += 1
                if not self.outage.active:
                    logger.warning("executor: poll failed: {}", exc)
                await asyncio.sleep(0.25)  # never spin on a failing venue

    async def _try_back(self) -> None:
        """While the exchange is unreachable: a full reconcile is the test of its return;
        trading resumes only after one succeeds."""
        result = await self._compare("")
        if result.ok:
            logger.warning("executor: exchange answers again; reconciled ({} drift): "
                           "trading resumes", result.drift_found)
            self.outage.back()
        else:
            self.s.counters["outage_reconcile_failures"] += 1

    def _in_resolution(self) -> frozenset[str]:
        return frozenset(k[1] for k in self.s.keys if k[0] == SUBMIT)

    async def poll_once(self, watch: bool = False) -> None:
        """All pairs at once: open orders, then recent trades, TTL cancels, balances.
        ``watch``: a periodic poll, whose findings witness the private events."""
        s = self.s
        changed: list[str] = []
        up = s.venue.events_up()
        await self.apply_open_orders(await s.venue.open_orders(), "", changed)
        await self.read_trades(changed=changed)
        if watch and changed:
            s.venue.on_poll_changes(changed, s.mono(), up)
        self.cancel_expired()
        if s.mono() - self._last_balance_fetch > s.cfg.executor.balance_refresh_s:
            await self.fetch_balances()

    def _trade_start_ms(self, lookback_s: float = 0.0) -> int:
        s = self.s
        oldest = None
        if self.trade_window.synced_from is None:
            oldest = min((r.created_at for r in s.db.open_orders(s.mode)), default=None)
        return int(self.trade_window.start_s(s.now(), oldest, lookback_s) * 1000)

    async def read_trades(self, pair: str | None = None, lookback_s: float = 0.0,
                          changed: list[str] | None = None) -> int:
        """Import the trades the venue lists and we do not hold yet; returns how many."""
        started = self.s.now()
        trades = await self.s.venue.user_trades(pair, self._trade_start_ms(lookback_s),
                                                self.trade_window)
        n = self.import_trades(trades, changed)
        if pair is None:
            self.trade_window.read_ok(started)
        return n

    async def apply_open_orders(self, exch_open: list[ExchangeOrder], symbol: str,
                                changed: list[str] | None = None) -> list[str]:
        """Bring DB rows in line with the venue's open orders; returns fix details
        (and appends the client ids it changed to ``changed``)."""
        s = self.s
        prefix = s.cfg.executor.client_id_prefix
        db_open = s.db.open_orders(s.mode, symbol)
        by_cid = {r.client_order_id: r for r in db_open}
        for eo in exch_open:
            cid = eo.client_order_id or ""
            if is_ours(cid, prefix) and cid not in by_cid:
                row = s.db.get_order(cid)
                if row is not None:
                    by_cid[cid] = row
        details: list[str] = []
        for d in diff_open_orders(db_open, by_cid, exch_open, prefix,
                                  in_resolution=self._in_resolution()):
            details.append(await self._fix(d, by_cid.get(d.client_order_id)))
            if changed is not None:
                changed.append(d.client_order_id)
        return details

    async def _fix(self, d: Drift, row: OrderRow | None) -> str:
        s = self.s
        now = s.now()
        if d.exchange_order is not None and self.orders.id_collision(
                d.client_order_id, d.exchange_order.id, d.exchange_order.pair):
            return f"not applied {d.client_order_id}: exchange id {d.exchange_order.id} " \
                   "held by another order (incident)"
        if d.kind == "orphan":
            assert d.exchange_order is not None
            eo = d.exchange_order
            s.db.insert_adopted(OrderRow(
                d.client_order_id, f"adopted:{d.client_order_id}", s.mode, eo.pair,
                eo.side if eo.side in ("buy", "sell") else "buy", eo.method, eo.price,
                eo.amount, d.new_filled, d.new_state, eo.id, 0.0, "adopted", True, now, now),
                s.cfg.executor.key_retention_s)
            s.counters["orphans_adopted"] += 1
            logger.warning("executor: adopted orphan order {} ({})", d.client_order_id, d.detail)
            self.orders.publish_order(d.client_order_id, "adopted")
            if s.cfg.executor.orphan_policy == "cancel":
                self.orders.cancel(d.client_order_id, "orphan_policy")
            return f"adopted {d.client_order_id}: {d.detail}"
        assert row is not None
        if d.kind == "update":
            key = s.db.get_key(SUBMIT, row.client_order_id)
            if key is not None and key.status == "FAILED":
                # An order we had given up on showed up: adopt it, report it.
                s.keys[(SUBMIT, row.client_order_id)] = idem.Key(
                    KeyStatus.FAILED, Phase.DONE, key.attempts, key.probes)
                s.key_modes[(SUBMIT, row.client_order_id)] = s.mode
                self.orders.key_event((SUBMIT, row.client_order_id),
                                      idem.AdoptedLate(now, d.exchange_order.id
                                                       if d.exchange_order else None))
                s.counters["late_adopted"] += 1
            s.db.update_order(row.client_order_id, now, state=d.new_state,
                              filled_quantity=d.new_filled,
                              exchange_order_id=d.exchange_order.id if d.exchange_order
                              else row.exchange_order_id)
            self.orders.publish_order(row.client_order_id)
            return f"updated {row.client_order_id}: {d.detail}"
        # missing: the order ended; find out how
        assert row.exchange_order_id is not None
        try:
            eo = await s.venue.get_order(row.exchange_order_id)
        except RejectedError as exc:
            if exc.kind != "order_not_found":
                raise
            return await self._not_found(row, d.detail)
        self._missing_since.pop(row.client_order_id, None)
        self.orders.record_exchange_order(row, eo)
        return f"closed {row.client_order_id}: {d.detail} -> {exchange_view(eo)[0]}"

    async def _not_found(self, row: OrderRow, detail: str) -> str:
        """The venue does not know an order we hold open (by exchange id). Asked again by
        client id (open orders, all orders); still unknown after the settle window, it is
        VANISHED: terminal, an incident, the safety latch, until an operator resolves it."""
        s = self.s
        cid = row.client_order_id
        eo = await find_by_client_id(s.venue, row.symbol, cid, row.created_at)
        if eo is not None:
            self._missing_since.pop(cid, None)
            if not self.orders.id_collision(cid, eo.id, row.symbol):
                self.orders.record_exchange_order(row, eo)
            return f"found {cid} by client id as {eo.id}"
        now = s.now()
        since = self._missing_since.setdefault(cid, now)
        window = s.cfg.executor.settle_window_s
        if now - since < window:
            return f"{cid}: {detail}; unknown to the exchange for {now - since:.1f} s"
        self._missing_since.pop(cid, None)
        why = (f"order {cid} ({row.symbol} {row.side} {row.quantity} @ {row.price}, exchange "
               f"id {row.exchange_order_id}) is open here but unknown to the exchange "
               f"after {window:.0f} s (open orders, all orders, order id)")
        s.db.update_order(cid, now, state="VANISHED", reason="vanished")
        self.orders.publish_order(cid, "vanished")
        s.counters["vanished"] += 1
        self.incidents.record("vanished", why, symbol=row.symbol, client_order_id=cid,
                              latch="safety_latch", latch_reason=f"{VANISHED_PREFIX} {why}; "
                              f"settle it with: btcbot-supervisor orders resolve {cid} "
                              "--as cancelled|filled --reason TEXT")
        return f"vanished {cid}: {why}"

    def import_trades(self, trades: list[UserTrade], changed: list[str] | None = None) -> int:
        s = self.s
        prefix = s.cfg.executor.client_id_prefix
        imported = 0
        for t in sorted(trades, key=lambda t: (t.timestamp_ms, t.id)):
            tid = str(t.id)
            if s.db.has_fill(tid):
                self.trade_window.remember(t.id)
                continue
            row = s.db.order_by_exchange_id(t.order_id)
            if row is None and is_ours(t.client_order_id, prefix):
                row = s.db.get_order(t.client_order_id or "")
            if row is None:
                if is_ours(t.client_order_id, prefix):
                    self._unknown_fill(t)
                else:
                    s.counters["foreign_trades"] += 1
                continue
            # Foreign trades are not remembered: one seen before its order's exchange
            # id was recorded must be matched again on the next read.
            self.trade_window.remember(t.id)
            if self.record_fill(FillRow(tid, t.order_id, row.client_order_id, row.symbol,
                                        t.side, t.price, t.amount, t.fee + t.tax,
                                        t.denominator, t.timestamp_ms)):
                imported += 1
                if changed is not None:
                    changed.append(row.client_order_id)
        return imported

    def _unknown_fill(self, t: UserTrade) -> None:
        """A trade under our client-id prefix for an order we hold no row of: money
        moved that nothing here accounts for."""
        if str(t.id) in self._unknown_fills:
            return
        self._unknown_fills.add(str(t.id))
        self.incidents.record(
            "unknown_fill", f"trade {t.id} ({t.pair} {t.side} {t.amount} @ {t.price}) of "
            f"order {t.order_id} / {t.client_order_id}, which this executor has no record of",
            symbol=t.pair, client_order_id=t.client_order_id or "", latch="safety_latch")

    def record_fill(self, f: FillRow) -> bool:
        s = self.s
        pos = s.db.positions(s.mode).get(f.symbol, PositionState())
        new = apply_fill(pos, f.side, f.price, f.quantity, f.fee)
        if not s.db.insert_fill(f, s.mode, new, s.now()):
            return False
        s.counters["fills"] += 1
        s.dirty = True
        s.publish(Fill(trade_id=f.trade_id, exchange_order_id=f.exchange_order_id,
                       client_order_id=f.client_order_id, symbol=f.symbol,
                       side=f.side, price=f.price, quantity=f.quantity,  # type: ignore[arg-type]
                       fee=f.fee, fee_asset=f.fee_asset, ts_ms=f.ts_ms))
        return True

    def cancel_expired(self) -> None:
        s = self.s
        for row in ttl_expired(s.db.open_orders(s.mode), s.now(),
                               s.cfg.executor.stale_order_ttl_s):
            key = s.db.get_key(CANCEL, row.client_order_id)
            if key is not None and key.status != "FAILED":
                continue
            s.counters["ttl_cancels"] += 1
            ack = self.orders.cancel(row.client_order_id, "ttl_expired")
            if ack.status == "rejected":
                s.log_once(f"ttl-{row.client_order_id}",
                           f"executor: TTL cancel of {row.client_order_id} refused: "
                           f"{ack.reason}")

    async def fetch_balances(self) -> list[tuple[str, Decimal, Decimal]]:
        s = self.s
        balances = await s.venue.balances()
        if balances != self._balances_written:
            # Only a change is written and announced: the liveness read between slow
            # polls (every 2 s) fetches the same balances again and again, and each
            # write made a portfolio snapshot for strategy and risk to decode.
            s.db.set_balances(s.mode, balances, s.now())
            self._balances_written = balances
            s.dirty = True
        self._last_balance_fetch = s.mono()
        return balances

    # --- private events ---------------------------------------------------------------
    def start_events(self) -> None:
        if (block := self.gates.read_block()) is not None:
            logger.warning("executor: private WebSocket off: {}", block)
            return
        self.s.venue.start(self.s.spawn, self.on_private_event)
        self.s.spawn(self._refresh_loop(), "ws-refresh")

    def _our_cid(self, cid: str | None, order_id: int) -> str | None:
        """The client id of one of our orders, or None (foreign or unknown)."""
        if is_ours(cid, self.s.cfg.executor.client_id_prefix):
            return cid
        row = self.s.db.order_by_exchange_id(order_id)
        return row.client_order_id if row is not None else None

    async def on_private_event(self, event: Any) -> None:
        s = self.s
        if not isinstance(event, OrderMatch | OrderInsert | OrderDelete | UserTrade):
            return
        if s.db_or_none is None:
            return
        cid = self._our_cid(event.client_order_id, event.order_id)
        if cid is None:
            s.counters["ws_foreign_events"] += 1
            return
        s.counters["ws_private_events"] += 1
        s.venue.on_event_for(cid, s.mono())
        if isinstance(event, OrderInsert) and self._insert_known(cid, event.order_id):
            # The send's answer already said so: a refresh would only cost two REST
            # calls right after every submit.
            s.counters["ws_inserts_known"] += 1
            return
        self._refresh_cids.add(cid)
        self._refresh_wanted.set()

    def _insert_known(self, cid: str, order_id: int) -> bool:
        row = self.s.db.get_order(cid)
        return (row is not None and row.exchange_order_id == order_id
                and row.state == "OPEN" and row.filled_quantity == 0)

    async def _refresh_loop(self) -> None:
        """One refresh in flight; events during it set the flag again: exactly one more."""
        while True:
            await self._refresh_wanted.wait()
            self._refresh_wanted.clear()
            cids, self._refresh_cids = self._refresh_cids, set()
            await self._refresh(cids)

    async def _refresh(self, cids: set[str]) -> None:
        s = self.s
        # Recovery resolves keys through probes and ends with a full scan: nothing to do.
        if s.db_or_none is None or s.recovering or self.gates.read_block() is not None:
            return
        s.counters["ws_refreshes"] += 1
        try:
            for cid in sorted(cids):
                await self.orders.refresh_order(cid)
            if await self.read_trades():
                # A fill moved money: do not leave balances to the (slow) poll.
                await self.fetch_balances()
        except BtcTurkError as exc:
            s.counters["ws_refresh_errors"] += 1
            logger.info("executor: trade refresh failed, again in {:.0f} s: {}",
                        REFRESH_RETRY_S, exc)
            self._refresh_cids |= cids
            asyncio.get_running_loop().call_later(REFRESH_RETRY_S, self._refresh_wanted.set)

    # --- bus input: dry-run fills, the mirror's recording ------------------------------
    def on_bus(self, body: Msg) -> None:
        s = self.s
        if s.db_or_none is None:
            return
        for row, fill, trade_id in s.venue.on_bus(body, lambda sym: s.db.open_orders(s.mode,
                                                                                       sym)):
            assert row.exchange_order_id is not None
            quote = row.symbol[-3:] if row.symbol.endswith("TRY") else "QUOTE"
            self.record_fill(FillRow(trade_id, row.exchange_order_id, row.client_order_id,
                                     row.symbol, row.side, fill.price, fill.quantity,
                                     fill.fee, quote, int(s.now() * 1000)))
            filled = row.filled_quantity + fill.quantity
            state = "FILLED" if filled >= row.quantity else "PARTIAL"
            s.db.update_order(row.client_order_id, s.now(), state=state,
                              filled_quantity=filled)
            self.orders.publish_order(row.client_order_id, "dry_run_fill")

    # --- reconcile --------------------------------------------------------------------
    async def reconcile(self, symbol: str) -> ReconcileResult:
        s = self.s
        s.counters["reconciles"] += 1
        if s.dry_run:
            return ReconcileResult(ok=True, drift_found=0, drift_fixed=0, failed_symbols=[],
                                   details=["dry-run: nothing to compare on an exchange"])
        if (block := self.gates.read_block()) is not None:
            syms = [symbol] if symbol else list(s.cfg.marketdata.symbols)
            return ReconcileResult(ok=False, drift_found=0, drift_fixed=0,
                                   failed_symbols=syms, details=[f"blocked: {block}"])
        if not self.outage.active:
            result = await self._compare(symbol)
            if not self.outage.active:
                return result
        # Drift checks are paused while the exchange is unreachable, and say so: the
        # executor already halted submits and resumes after a reconcile of its own.
        s.counters["reconciles_paused"] += 1
        return ReconcileResult(ok=True, drift_found=0, drift_fixed=0, failed_symbols=[],
                               details=[f"paused: {self.gates.halts.get('exchange', '')}"])

    async def _compare(self, symbol: str) -> ReconcileResult:
        s = self.s
        symbols = [symbol] if symbol else sorted(set(s.cfg.marketdata.symbols)
                                                 | set(s.db.order_symbols(s.mode)))
        failed: list[str] = []
        details: list[str] = []
        found = fixed = 0
        lookback_s = s.cfg.executor.reconcile_trade_lookback_s
        imported = 0
        for sym in symbols:
            try:
                fixes = await self.apply_open_orders(await s.venue.open_orders(sym), sym)
                n = await self.read_trades(sym, lookback_s)
                imported += n
            except BtcTurkError as exc:
                failed.append(sym)
                details.append(f"{sym}: {exc}")
                continue
            if n:
                fixes.append(f"{sym}: imported {n} missing fills")
            found += len(fixes)
            fixed += len(fixes)
            details.extend(fixes)
        try:
            # Quiet: nothing open, nothing in flight, no fill just imported; only then
            # may a missing baseline be taken (one taken mid-fill latched falsely before).
            quiet = (not failed and imported == 0 and not s.keys
                     and not s.db.open_orders(s.mode))
            held = s.db.positions(s.mode)
            activity = (s.counters["accepted"], s.counters["fills"])
            balances = await self.fetch_balances()
            # Quiet must hold across the balance read too: an order accepted (and maybe
            # filled) or a fill imported while it was on its way makes the balances
            # newer than our fills, and a baseline taken then was wrong for good
            # (simulate --trading busy, seed 23: -0.00106868 ETH, latched at 20 s).
            quiet = quiet and activity == (s.counters["accepted"], s.counters["fills"]) \
                and not s.keys and not s.db.open_orders(s.mode)
            settled = True
            if not quiet and self._drifting(balances):
                # A fill may have landed between the trades and the balances: read the
                # trades again; a fill imported since just before the balances (by this
                # read or by the private feed meanwhile) makes the drift inconclusive.
                imported_now = await self.read_trades(None, lookback_s)
                settled = imported_now == 0 and s.db.positions(s.mode) == held
            drift = self._balance_check(balances, symbols, quiet, settled)
        except BtcTurkError as exc:
            failed.extend(sym for sym in symbols if sym not in failed)
            details.append(f"balances: {exc}")
        else:
            found += len(drift)
            details.extend(drift)
        unresolved = [f"{k[0]} {k[1]} {v.status}" for k, v in s.keys.items()
                      if v.phase == Phase.MAYBE_SENT]
        details.extend(f"unresolved key: {u}" for u in unresolved[:20])
        if found:
            s.counters["drift_found"] += found
            s.counters["drift_fixed"] += fixed
            logger.warning("executor: reconcile found {} drift(s): {}", found, details[:10])
        return ReconcileResult(ok=not failed, drift_found=found, drift_fixed=fixed,
                               failed_symbols=failed, details=details[:100])

    def _baseline(self) -> dict[str, Decimal]:
        if self._balance_baseline is None:
            raw = self.s.db.get_meta(f"balance_baseline:{self.s.mode}")
            self._balance_baseline = ({a: Decimal(v) for a, v in json.loads(raw).items()}
                                      if raw else {})
        return self._balance_baseline

    def _holdings(self, balances: list[tuple[str, Decimal, Decimal]]
                  ) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """Per base asset: the exchange's totals and our positions from fills."""
        s = self.s
        totals = {a: f + lk for a, f, lk in balances}
        positions = {sym[:-3]: p.quantity for sym, p in s.db.positions(s.mode).items()
                     if sym.endswith("TRY")}
        return totals, positions

    def _drift(self, totals: dict[str, Decimal], positions: dict[str, Decimal]
               ) -> dict[str, Decimal]:
        return {a: d for a, d in balance_drift(totals, positions, self._baseline()).items()
                if abs(d) > self.s.cfg.executor.balance_drift_tolerance}

    def _drifting(self, balances: list[tuple[str, Decimal, Decimal]]) -> bool:
        return bool(self._drift(*self._holdings(balances)))

    def _balance_check(self, balances: list[tuple[str, Decimal, Decimal]],
                       symbols: list[str], quiet: bool, settled: bool = True) -> list[str]:
        """Base-asset balance vs position from fills, less a persisted baseline (holdings
        from outside our fills), taken per asset at the first quiet reconcile. A drift is
        reported once seen on two reconciles in a row, and latches the bot after
        ``balance_drift_reconciles`` in a row; a round in which a fill landed between the
        trades and the balances (not ``settled``) neither counts nor ends a run
        (``recovery.drift_runs``)."""
        s = self.s
        ex = s.cfg.executor
        totals, positions = self._holdings(balances)
        baseline = self._baseline()
        new = {}
        for sym in symbols:
            base = sym[:-3] if sym.endswith("TRY") else sym
            if base not in baseline and quiet:
                new[base] = totals.get(base, Decimal(0)) - positions.get(base, Decimal(0))
        if new:
            baseline.update(new)
            s.db.set_meta(f"balance_baseline:{s.mode}",
                          json.dumps({a: str(v) for a, v in baseline.items()}))
            logger.info("executor: balance baseline taken at a quiet moment: {}",
                        {a: plain(v) for a, v in new.items()})
        if not settled:
            s.counters["balance_checks_unsettled"] += 1
        drift = self._drift(totals, positions)
        now = s.now()
        self._drift_runs = runs = drift_runs(self._drift_runs, drift, settled=settled,
                                             now=now)
        if not settled:
            return []
        out = [f"balance {a}: exchange differs from fills by {plain(d)} ({runs[a].count} "
               f"reconciles in a row, {now - runs[a].since:.0f} s)"
               for a, d in drift.items() if runs[a].count >= 2]
        over = {a: drift[a] for a in drift_latches(
            runs, now=now, reconciles=ex.balance_drift_reconciles,
            min_s=ex.balance_drift_min_s)}
        if over and not self.gates.latch("safety_latch"):
            amounts = ", ".join(
                f"{a}: exchange {plain(totals.get(a, Decimal(0)))}, fills "
                f"{plain(positions.get(a, Decimal(0)))}, baseline {plain(baseline[a])}, "
                f"drift {plain(d)}" for a, d in sorted(over.items()))
            self.incidents.record(
                "balance_drift", f"balance drift beyond {ex.balance_drift_tolerance} for "
                f"{ex.balance_drift_reconciles} reconciles in a row and at least "
                f"{ex.balance_drift_min_s:.0f} s: {amounts}",
                latch="safety_latch")
        return out
