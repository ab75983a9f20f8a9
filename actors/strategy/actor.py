"""The strategy actor: hosts one strategy plug-in (``strategy.plugin``, see
actors/strategy/api.py and docs/strategies.md). Book updates and order/position events
in, intents (to risk) and cancels (to the executor) out.

Event-driven: a book update (throttled per symbol, ``throttle_ms``, with a trailing
evaluation so the last book of a burst is never ignored), an order or fill event or a
new portfolio snapshot triggers the plug-in's decision for that symbol
(``host.StrategyHost``). Intents are published on ``intent.<SYMBOL>`` and sent to risk
by reliable request; cancels go to the executor.

Nothing is emitted before the executor's snapshot (positions, balances, open orders)
has been received (FSM DEGRADED_RECOVERY until then, retried with backoff), and a
symbol whose position just changed (fill, terminal order) waits for a snapshot that
reflects it, so no decision is taken on a position we know to be outdated
(actors/strategy/gating.py).

Clock: every decision runs on the *message clock*, never the wall clock: "now" for a
symbol is the envelope ``wall_ns`` of its latest BookSnapshot (``replay`` preserves it).
The intent's ``created_wall_ns``, the throttle, the reject backoff and ``on_tick`` use
it, so replaying the same messages yields the same intents whatever the time of the
replay. Only *when* a trailing-edge re-evaluation runs is a loop timer; what it decides
still uses the message clock. The injected ``Clock``'s monotonic reading only orders
local events (which snapshot can reflect which order or fill).

Ids: the host's boot number (``<data_dir>/strategy.boot``, bumped durably on every
start; ``BTCBOT_STRATEGY_BOOT`` fixes it, which replay uses to run with the recorded
one) is part of every intent id, so a restart never reuses an id of an earlier run.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from loguru import logger

from actors.runtime import EXIT_CONFIG, Actor, FatalActorError, main_for
from actors.strategy import gating
from actors.strategy.host import Outcome, StrategyHost
from actors.strategy.loader import load_strategy
from bus.messages import (
    BookSnapshot,
    CancelOrder,
    Fill,
    Intent,
    IntentAck,
    OrderEvent,
    Packet,
    PortfolioSnapshot,
    PublicTrade,
    SnapshotQuery,
    StrategyInfo,
    SubmitIntent,
    SymbolRules,
)
from bus.transport import RequestClient, RequestFailed
from shared.boot import BootCounterError, next_boot
from shared.clock import Clock, LiveClock
from shared.config import ConfigError
from shared.fsm import State
from shared.ids import client_order_id

BOOT_ENV = "BTCBOT_STRATEGY_BOOT"
BOOT_FILE = "strategy.boot"


def boot_number(data_dir: str) -> int:
    fixed = os.environ.get(BOOT_ENV, "")
    if fixed:
        if not fixed.isdigit():
            raise FatalActorError(f"{BOOT_ENV}={fixed!r}: not a number", EXIT_CONFIG)
        return int(fixed)
    try:
        return next_boot(os.path.join(data_dir, BOOT_FILE))
    except BootCounterError as exc:
        raise FatalActorError(str(exc), EXIT_CONFIG) from None


class StrategyActor(Actor):
    name = "strategy"
    subscriptions = ("md.book.", "md.trade.", "md.rules.", "order.", "fill.", "portfolio")

    def __init__(self, *args: Any, clock: Clock | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = self.cfg.strategy
        self.clock: Clock = clock or LiveClock()
        try:
            plugin = load_strategy(self.params)
        except ConfigError as exc:
            raise FatalActorError(f"config error: {exc}", EXIT_CONFIG) from None
        self.host = StrategyHost(plugin, boot=boot_number(str(self.cfg.path(self.cfg.data_dir))))
        self.unthrottled = plugin.unthrottled
        self._trailing: dict[str, asyncio.TimerHandle] = {}
        self._last_tick: dict[str, int] = {}
        self._refresh = asyncio.Event()
        self.risk: RequestClient | None = None
        self.executor: RequestClient | None = None
        logger.info("strategy: plug-in {} ({}), boot {}", plugin.name, self.params.plugin,
                    self.host.boot)

    @property
    def gate(self) -> gating.GatingState:
        return self.host.gate

    @property
    def synced(self) -> bool:
        return self.host.gate.synced

    async def setup(self) -> None:
        rc = self.cfg.risk
        # Risk may wait for the executor (timeout x attempts) before answering.
        risk_timeout = rc.executor_timeout_s * (rc.executor_retries + 1) + 2.0
        self.risk = RequestClient(self.ctx, self.cfg.command_endpoint("risk"), self.auth,
                                  server="risk", timeout_s=risk_timeout, retries=1)
        self.executor = RequestClient(self.ctx, self.cfg.command_endpoint("executor"),
                                      self.auth, server="executor", timeout_s=2.0, retries=0)
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

    def _apply_snapshot(self, snap: PortfolioSnapshot, since_mono: int) -> None:
        first = self.host.apply_snapshot(snap, since_mono)
        self.counters["snapshots"] += 1
        if first:
            self.fsm.to(State.READY, "executor snapshot received")
            logger.info("strategy: synced with executor ({} positions, {} open orders)",
                        len(snap.positions), sum(map(len, self.gate.open_orders.values())))
        for symbol in list(self.host.books):
            self._on_trigger(symbol)

    # --- bus -------------------------------------------------------------------------
    async def on_message(self, topic: str, packet: Packet) -> None:
        body = packet.body
        match body:
            case BookSnapshot():
                self.host.apply_book(body, packet.env.wall_ns)
                self._on_trigger(body.symbol, tick=True)
                self._maybe_tick(body.symbol, packet.env.wall_ns)
            case PublicTrade():
                # Not throttled like books (each trade is heard once), but behind the same
                # gates: a trade never decides while an intent is pending or backing off.
                self.counters["trades"] += 1
                if self.host.hears_trades:
                    self._evaluate(body.symbol, "on_trade", body.price, body.quantity,
                                   body.side)
            case SymbolRules():
                self.host.apply_rules(body)
            case OrderEvent():
                if self.host.apply_order_event(body, self.clock.mono_ns()):
                    self._refresh.set()
            case Fill():
                # The position moved: no decision on it before a snapshot that reflects
                # it (also before the first sync); the plug-in hears of it when it may act.
                gating.mark_dirty(self.gate, body.symbol, self.clock.mono_ns())
                self._refresh.set()
                if self.synced and not self.paused:
                    self._act(self.host.on_fill(body, self.clock.mono_ns()))
            case PortfolioSnapshot():
                if self.synced:
                    # Local receipt time, not the sender's env.mono_ns: the executor's
                    # fills and order events travel on the same publisher, in order, so
                    # a snapshot received after them reflects them; and a replayed
                    # snapshot's recorded mono_ns means nothing to this process.
                    self._apply_snapshot(body, self.clock.mono_ns())
            case _:
                self.counters["ignored_messages"] += 1

    # --- deciding --------------------------------------------------------------------
    def _on_trigger(self, symbol: str, tick: bool = False) -> None:
        if self.unthrottled:
            if tick:
                self._evaluate(symbol)
            return
        # The throttle runs on the message clock (the book's envelope time), so the same
        # books are evaluated at the same points in a replay; only the trailing edge's
        # wake-up is a loop timer.
        now = self.host.clock_of.get(symbol, 0)
        wait_ns = gating.throttle_wait_ns(self.gate, symbol, now,
                                          self.params.throttle_ms * 1_000_000)
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

    def _maybe_tick(self, symbol: str, clock_ns: int) -> None:
        """``on_tick`` every ``tick_s`` of message clock (the book stream carries it)."""
        if self.params.tick_s <= 0:
            return
        last = self._last_tick.setdefault(symbol, clock_ns)
        if clock_ns - last >= int(self.params.tick_s * 1e9):
            self._last_tick[symbol] = clock_ns
            self._evaluate(symbol, "on_tick")

    def _evaluate(self, symbol: str, hook: str = "on_book", *args: object) -> None:
        now = self.host.clock_of.get(symbol, 0)  # the message clock of the latest book
        if hook == "on_book":
            gating.mark_evaluated(self.gate, symbol, now)
        if not self.synced or symbol not in self.host.books or self.paused:
            return
        skip = gating.blocked(self.gate, symbol, now, every_tick=self.unthrottled)
        if skip is not None:
            self.counters[skip] += 1
            return
        if symbol not in self.host.rules:
            self.counters["skip_no_rules"] += 1
            return
        self.counters["evaluations"] += 1
        self._act(self.host.decide(symbol, hook, *args))

    def _act(self, out: Outcome) -> None:
        if out.failure is not None:
            f = out.failure
            self.counters["plugin_errors"] += 1
            logger.error("strategy: plug-in {} raised in {} for {}: {}; symbol paused for "
                         "this strategy until restart. Input: {}", self.host.strategy.name,
                         f.hook, f.symbol, f.error, f.context)
        for intent in out.intents:
            self.counters["intents"] += 1
            self.spawn(self._submit(intent), f"submit-{intent.intent_id}")
        for cancel in out.cancels:
            self.counters["cancels"] += 1
            self.spawn(self._cancel(cancel), f"cancel-{cancel.client_order_id}")

    async def _cancel(self, cancel: CancelOrder) -> None:
        # Through risk: only risk may cancel at the executor (bus/roles.py).
        assert self.risk is not None
        try:
            await self.risk.request(cancel)
            logger.info("strategy: cancel {} because {}", cancel.client_order_id,
                        cancel.reason or "-")
        except RequestFailed as exc:
            self.counters["cancel_failures"] += 1
            logger.warning("strategy: cancel {} failed: {}", cancel.client_order_id, exc)

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
                                              self.host.clock_of.get(symbol, 0)))
            return
        finally:
            if not announced:  # never sent: still on the record
                announce()
            gating.end_intent(self.gate, symbol, intent.intent_id)
        if not isinstance(reply, IntentAck):
            self.counters["risk_bad_reply"] += 1
            self._after_rejection(symbol, intent.created_wall_ns)
            return
        # One line per decision, what `logs strategy -f` shows: logged once risk has
        # answered, so it never delays the send.
        logger.info("strategy: {} {} {} {:.8g}@{} because {} -> {}{} [{}]", symbol, intent.side,
                    intent.order_type, intent.quantity, intent.price, intent.reason or "-",
                    reply.verdict, f" ({', '.join(reply.reasons)})" if reply.reasons else "",
                    intent.intent_id)
        self.counters[f"ack_{reply.verdict}"] += 1
        if reply.verdict in ("approved", "resized"):
            cid = client_order_id(self.cfg.executor.client_id_prefix, intent.intent_id)
            self.host.approved(intent, cid, self.clock.mono_ns())
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
                            plugin=self.host.strategy.name, boot=self.host.boot,
                            plugin_paused=sorted(self.host.failed),
                            trade_every_tick=self.unthrottled)


def main() -> None:
    main_for(StrategyActor)


if __name__ == "__main__":
    main()
