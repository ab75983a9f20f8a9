"""The strategy actor: book updates and order/position events in, intents out.

Event-driven: a book update (throttled per symbol, ``throttle_ms``, with a trailing
evaluation so the last book of a burst is never ignored), an order or fill event or a
new portfolio snapshot triggers the pure decision (``logic.decide``) for that symbol.
Intents are published on ``intent.<SYMBOL>`` and sent to risk by reliable request.

Nothing is emitted before the executor's snapshot (positions, balances, open orders)
has been received (FSM DEGRADED_RECOVERY until then, retried with backoff), and a
symbol whose position just changed (fill, terminal order) waits for a snapshot that
reflects it, so no decision is taken on a position we know to be outdated.

Clock: every decision runs on the *message clock*, never the wall clock: "now" for a
symbol is the envelope ``wall_ns`` of its latest BookSnapshot (the message that
triggers the decision; ``replay`` preserves it). The intent's ``created_wall_ns``, the
per-symbol throttle and the reject backoff all use it, so replaying the same messages
yields the same intents whatever the time of the replay. Only *when* a trailing-edge
re-evaluation runs is a loop timer; what it decides still uses the message clock.
Local monotonic times remain only for ordering local events (which snapshot can
reflect which order or fill), never inside a decision.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.runtime import Actor, main_for
from actors.strategy import gating
from actors.strategy.logic import SymbolView, decide
from bus.messages import (
    BookSnapshot,
    Fill,
    Intent,
    IntentAck,
    OrderEvent,
    Packet,
    PortfolioSnapshot,
    Position,
    SnapshotQuery,
    StrategyInfo,
    SubmitIntent,
    SymbolRules,
)
from bus.transport import RequestClient, RequestFailed
from shared.clock import Clock, LiveClock
from shared.fsm import State
from shared.ids import client_order_id


class StrategyActor(Actor):
    name = "strategy"
    subscriptions = ("md.book.", "md.rules.", "order.", "fill.", "portfolio")

    def __init__(self, *args: Any, clock: Clock | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = self.cfg.strategy
        # Local monotonic readings only order local events (gating.py); decisions run on
        # the message clock.
        self.clock: Clock = clock or LiveClock()
        self.books: dict[str, BookSnapshot] = {}
        self.book_clock: dict[str, int] = {}  # symbol -> envelope wall_ns of its latest book
        self.quote_of: dict[str, str] = {}
        self.positions: dict[str, Position] = {}
        self.balances: dict[str, Decimal] = {}
        self.gate = gating.GatingState()
        self._trailing: dict[str, asyncio.TimerHandle] = {}
        self._refresh = asyncio.Event()
        self.risk: RequestClient | None = None
        self.executor: RequestClient | None = None

    async def setup(self) -> None:
        rc = self.cfg.risk
        # Risk may wait for the executor (timeout x attempts) before answering.
        risk_timeout = rc.executor_timeout_s * (rc.executor_retries + 1) + 2.0
        self.risk = RequestClient(self.ctx, self.cfg.command_endpoint("risk"), self.name,
                                  timeout_s=risk_timeout, retries=1)
        self.executor = RequestClient(self.ctx, self.cfg.command_endpoint("executor"),
                                      self.name, timeout_s=2.0, retries=0)
        self.fsm.to(State.DEGRADED_RECOVERY, "waiting for executor snapshot")
        self.spawn(self._snapshot_loop(), "snapshot")

    async def teardown(self) -> None:
        for handle in self._trailing.values():
            handle.cancel()
        for client in (self.risk, self.executor):
            if client is not None:
                client.close()

    # --- executor snapshot -------------------------------------------------------------
    async def _snapshot_loop(self) -> None:
        backoff = 0.2
        while True:
            assert self.executor is not None
            started = self.clock.mono_ns()
            try:
                reply = await self.executor.request(SnapshotQuery())
            except RequestFailed as exc:
                self.counters["snapshot_failures"] += 1
                logger.warning("strategy: executor snapshot failed: {}", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.params.snapshot_interval_s)
                continue
            backoff = 0.2
            if isinstance(reply, PortfolioSnapshot):
                self._apply_snapshot(reply, started)
            else:
                self.counters["snapshot_bad_reply"] += 1
            self._refresh.clear()
            try:
                await asyncio.wait_for(self._refresh.wait(), self.params.snapshot_interval_s)
            except TimeoutError:
                pass

    @property
    def synced(self) -> bool:
        return self.gate.synced

    def _apply_snapshot(self, snap: PortfolioSnapshot, since_mono: int) -> None:
        self.positions = {p.symbol: p for p in snap.positions}
        self.balances = {b.asset: b.free for b in snap.balances}
        first = gating.apply_snapshot(self.gate, snap.open_orders, since_mono)
        self.counters["snapshots"] += 1
        if first:
            self.fsm.to(State.READY, "executor snapshot received")
            logger.info("strategy: synced with executor ({} positions, {} open orders)",
                        len(snap.positions), sum(map(len, self.gate.open_orders.values())))
        for symbol in list(self.books):
            self._on_trigger(symbol)

    # --- bus -------------------------------------------------------------------------
    async def on_message(self, topic: str, packet: Packet) -> None:
        body = packet.body
        match body:
            case BookSnapshot():
                self.books[body.symbol] = body
                self.book_clock[body.symbol] = packet.env.wall_ns
                self._on_trigger(body.symbol, tick=True)
            case SymbolRules():
                self.quote_of[body.symbol] = body.quote
            case OrderEvent():
                self._on_order_event(body)
            case Fill():
                self._mark_dirty(body.symbol)
            case PortfolioSnapshot():
                if self.synced:
                    # Local receipt time, not the sender's env.mono_ns: the executor's
                    # fills and order events travel on the same publisher, in order, so
                    # a snapshot received after them reflects them; and a replayed
                    # snapshot's recorded mono_ns means nothing to this process.
                    self._apply_snapshot(body, self.clock.mono_ns())
            case _:
                self.counters["ignored_messages"] += 1

    def _on_order_event(self, ev: OrderEvent) -> None:
        if gating.apply_order_event(self.gate, ev, self.clock.mono_ns()):
            self._refresh.set()

    def _mark_dirty(self, symbol: str) -> None:
        gating.mark_dirty(self.gate, symbol, self.clock.mono_ns())
        self._refresh.set()

    # --- deciding --------------------------------------------------------------------
    def _on_trigger(self, symbol: str, tick: bool = False) -> None:
        if self.params.trade_every_tick:
            if tick:
                self._evaluate(symbol)
            return
        # The throttle runs on the message clock (the book's envelope time), so the same
        # books are evaluated at the same points in a replay; only the trailing edge's
        # wake-up is a loop timer.
        now = self.book_clock.get(symbol, 0)
        wait_ns = gating.throttle_wait_ns(self.gate, symbol, now, self.throttle_ns)
        if wait_ns == 0:
            pending = self._trailing.pop(symbol, None)
            if pending is not None:
                pending.cancel()  # this evaluation sees the latest book already
            self._evaluate(symbol)
        elif symbol not in self._trailing:
            loop = asyncio.get_running_loop()
            self._trailing[symbol] = loop.call_later(wait_ns / 1e9, self._trailing_fire, symbol)

    def _trailing_fire(self, symbol: str) -> None:
        self._trailing.pop(symbol, None)
        self._evaluate(symbol)

    @property
    def throttle_ns(self) -> int:
        return self.params.throttle_ms * 1_000_000

    def _evaluate(self, symbol: str) -> None:
        now = self.book_clock.get(symbol, 0)  # the message clock of the latest book
        gating.mark_evaluated(self.gate, symbol, now)
        book = self.books.get(symbol)
        if not self.synced or book is None or self.paused:
            return
        skip = gating.blocked(self.gate, symbol, now, every_tick=self.params.trade_every_tick)
        if skip is not None:
            self.counters[skip] += 1
            return
        quote = self.quote_of.get(symbol)
        if quote is None:
            self.counters["skip_no_rules"] += 1
            return
        self.counters["evaluations"] += 1
        view = SymbolView(
            symbol=symbol, bid=book.bids[0][0], ask=book.asks[0][0],
            position=self.positions.get(symbol), free_quote=self.balances.get(quote, Decimal(0)),
            open_orders=self.gate.open_count(symbol),
            pending_intent=symbol in self.gate.pending, epoch=self.gate.epoch.get(symbol, 0),
            book_key=f"{book.source}:{book.change_set}:{book.exchange_ts_ms}:{book.recv_wall_ns}",
            book_mono_ns=book.recv_mono_ns,
        )
        intent = decide(view, self.params, now)
        if intent is None:
            return
        gating.begin_intent(self.gate, symbol, intent.intent_id)
        self.counters["intents"] += 1
        self.spawn(self._submit(intent), f"submit-{intent.intent_id}")

    async def _submit(self, intent: Intent) -> None:
        assert self.risk is not None
        symbol = intent.symbol
        announced = False

        def announce() -> None:
            nonlocal announced
            announced = True
            self.publish(intent)

        try:
            # The request goes first: the announcement wakes every subscriber.
            reply = await self.risk.request(SubmitIntent(intent=intent), after_send=announce)
        except RequestFailed as exc:
            self.counters["risk_unreachable"] += 1
            logger.error("strategy: risk did not take {}: {}", intent.intent_id, exc)
            # The request took its timeouts: back off from the latest message clock, not
            # from the (by now old) intent's.
            self._after_rejection(symbol, max(intent.created_wall_ns,
                                              self.book_clock.get(symbol, 0)))
            return
        finally:
            if not announced:  # never sent: still on the record
                announce()
            gating.end_intent(self.gate, symbol, intent.intent_id)
        if not isinstance(reply, IntentAck):
            self.counters["risk_bad_reply"] += 1
            self._after_rejection(symbol, intent.created_wall_ns)
            return
        self.counters[f"ack_{reply.verdict}"] += 1
        if reply.verdict in ("approved", "resized"):
            cid = client_order_id(self.cfg.executor.client_id_prefix, intent.intent_id)
            gating.approved(self.gate, symbol, cid, self.clock.mono_ns())
            return
        if "executor:duplicate" in reply.reasons and gating.duplicate(
                self.gate, symbol, self.clock.mono_ns()):
            self._refresh.set()
            return
        self._after_rejection(symbol, intent.created_wall_ns)

    def _after_rejection(self, symbol: str, clock_ns: int) -> None:
        gating.rejected(self.gate, symbol, clock_ns, int(self.params.reject_backoff_s * 1e9))

    def heartbeat_info(self) -> StrategyInfo:
        return StrategyInfo(synced=self.synced, pending=sorted(self.gate.pending),
                            trade_every_tick=self.params.trade_every_tick)


def main() -> None:
    main_for(StrategyActor)


if __name__ == "__main__":
    main()
