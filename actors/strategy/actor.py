"""The strategy actor: hosts one strategy plug-in (``strategy.plugin``, see
actors/strategy/api.py and docs/strategies.md). Book updates and order/position events
in, intents (to risk) and cancels (to the executor) out.

Event-driven: a book update (throttled per symbol, ``throttle_ms``, with a trailing
evaluation so the last book of a burst is never ignored), an order or fill event or a
new portfolio snapshot triggers the plug-in's decision for that symbol
(``host.StrategyHost``). Intents are published on ``intent.<SYMBOL>`` and sent to risk
by reliable request; cancels go to the executor.

Nothing is emitted before the executor's snapshot (positions, balances, open orders)
has been received (FSM DEGRADED_RECOVERY until then), and a symbol whose position just
changed (fill, terminal order) waits for a snapshot that reflects it, so no decision is
taken on a position we know to be outdated (actors/strategy/gating.py).

Every input is a bus message (replay --verify depends on it, docs/recordings.md):
- the executor's snapshots are applied as they come on ``portfolio``; the strategy asks
  for one (``SnapshotQuery(publish=True)``) at start, after a fill or a terminal order
  and every ``snapshot_interval_s``, but never uses the reply's copy;
- risk's verdict is applied when its ``decision.<SYMBOL>`` comes on the bus, not from
  the request's reply. When risk cannot be reached (or its decision never shows up on
  the bus), the strategy publishes that outcome as a decision of its own on
  ``intent.outcome.<SYMBOL>`` and applies it when it comes back, so even the failure is
  a recorded input;
- the throttle's trailing edge runs on the bus clock (``md.clock`` ticks from
  marketdata), never on a loop timer;
- input is taken from the actor's own first heartbeat that came back through the bus
  on (``Actor.deterministic_inputs``).

Clock: every decision runs on the *message clock*, never the wall clock: "now" for a
symbol is the envelope ``wall_ns`` of its latest BookSnapshot (``replay`` preserves it).
The intent's ``created_wall_ns``, the throttle, the reject backoff and ``on_tick`` use
it. Local events (which snapshot can reflect which order or fill) are ordered by the
number of the input that brought them, never by a clock.

Ids: the host's boot number (``<data_dir>/strategy.boot``, bumped durably on every
start; ``BTCBOT_STRATEGY_BOOT`` fixes it, which replay uses to run with the recorded
one) is part of every intent id, so a restart never reuses an id of an earlier run.

``replay.verify`` (replay --verify's pipeline only): decisions come from the replayed
recording, intents are published on ``verify.intent.<SYMBOL>`` and never sent, cancels
are counted and not sent, and no snapshot is asked for (the recorded ones are replayed).
"""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.runtime import EXIT_CONFIG, Actor, FatalActorError, main_for
from actors.strategy import gating
from actors.strategy.host import Outcome, StrategyHost
from actors.strategy.loader import load_strategy
from bus.messages import (
    BookSnapshot,
    CancelOrder,
    ClockTick,
    Fill,
    Intent,
    IntentAck,
    OrderEvent,
    Packet,
    PortfolioSnapshot,
    PublicTrade,
    RiskDecision,
    SnapshotQuery,
    StrategyInfo,
    SubmitIntent,
    SymbolRules,
)
from bus.transport import RequestFailed
from bus.wiring import ClientLike
from shared.boot import BootCounterError, next_boot
from shared.config import ConfigError
from shared.fsm import State
from shared.ids import client_order_id

BOOT_ENV = "BTCBOT_STRATEGY_BOOT"
SYNC_RETRY_S = 0.5  # before the first snapshot: ask again this soon
OUTCOME_TOPIC = "intent.outcome."  # our stand-in decisions (risk unreachable, lost)
DECISION_WAIT_S = 2.0  # risk's answer came: its decision on the bus within this
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
    subscriptions = ("md.book.", "md.trade.", "md.rules.", "md.clock", "order.", "fill.",
                     "portfolio", "decision.", OUTCOME_TOPIC)
    deterministic_inputs = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = self.cfg.strategy
        try:
            plugin = load_strategy(self.params)
        except ConfigError as exc:
            raise FatalActorError(f"config error: {exc}", EXIT_CONFIG) from None
        self.host = StrategyHost(plugin, boot=boot_number(str(self.cfg.path(self.cfg.data_dir))))
        self.unthrottled = plugin.unthrottled
        self._due: dict[str, int] = {}  # symbol -> bus clock its trailing evaluation is due
        self._last_tick: dict[str, int] = {}
        self._input_no = 0  # number of the current input: orders local events
        self._inflight: dict[str, Intent] = {}  # intent id -> intent awaiting its decision
        self._verify = self.cfg.replay.verify
        self._refresh = asyncio.Event()
        self.risk: ClientLike | None = None
        self.executor: ClientLike | None = None
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
        # Risk may wait for the intent's bus copy (INTENT_WAIT_S) and the executor.
        risk_timeout = rc.executor_timeout_s * (rc.executor_retries + 1) + 4.0
        self.risk = self.request_client(self.cfg.command_endpoint("risk"), server="risk",
                                        timeout_s=risk_timeout, retries=1)
        self.executor = self.request_client(self.cfg.command_endpoint("executor"),
                                            server="executor", timeout_s=2.0, retries=0)
        self.fsm.to(State.DEGRADED_RECOVERY, "waiting for executor snapshot")
        if not self._verify:
            self.spawn(self._snapshot_loop(), "snapshot")

    async def teardown(self) -> None:
        for client in (self.risk, self.executor):
            if client is not None:
                client.close()

    # --- executor snapshot -------------------------------------------------------------
    async def _snapshot_loop(self) -> None:
        """Asks the executor to publish a snapshot; the copy on the bus is the one
        applied (on_message), never the reply's."""
        backoff = 0.2
        while True:
            assert self.executor is not None
            try:
                await self.executor.request(SnapshotQuery(publish=True))
            except RequestFailed as exc:
                self.counters["snapshot_failures"] += 1
                logger.warning("strategy: executor snapshot failed: {}", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.params.snapshot_interval_s)
                continue
            backoff = 0.2
            self._refresh.clear()
            # Not synced yet: the published copy may have gone by before our input
            # opened (see Actor.deterministic_inputs); ask again soon.
            wait = self.params.snapshot_interval_s if self.synced else SYNC_RETRY_S
            try:
                await asyncio.wait_for(self._refresh.wait(), wait)
            except TimeoutError:
                pass

    def _apply_snapshot(self, snap: PortfolioSnapshot) -> None:
        # Every executor message travels on one publisher, in order: a snapshot taken
        # in after a fill or order event reflects it.
        first = self.host.apply_snapshot(snap, self._input_no)
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
        self._input_no += 1
        match body:
            case ClockTick():
                self._on_clock(packet.env.wall_ns)
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
                if self.host.apply_order_event(body, self._input_no):
                    self._refresh.set()
            case Fill():
                # The position moved: no decision on it before a snapshot that reflects
                # it (also before the first sync); the plug-in hears of it when it may act.
                gating.mark_dirty(self.gate, body.symbol, self._input_no)
                self._refresh.set()
                if self.synced and not self.paused:
                    self._act(self.host.on_fill(body, self._input_no))
            case PortfolioSnapshot():
                self._apply_snapshot(body)
            case RiskDecision():
                self._on_decision(body)
            case _:
                self.counters["ignored_messages"] += 1

    # --- deciding --------------------------------------------------------------------
    def _on_trigger(self, symbol: str, tick: bool = False) -> None:
        if self.unthrottled:
            if tick:
                self._evaluate(symbol)
            return
        # The throttle runs on the message clock (the book's envelope time) and its
        # trailing edge on the bus clock, so the same books are evaluated at the same
        # points in a replay.
        now = self.host.clock_of.get(symbol, 0)
        wait_ns = gating.throttle_wait_ns(self.gate, symbol, now,
                                          self.params.throttle_ms * 1_000_000)
        if wait_ns == 0:
            self._due.pop(symbol, None)  # this evaluation sees the latest book already
            self._evaluate(symbol)
        else:
            self._due.setdefault(symbol, now + wait_ns)

    def _on_clock(self, clock_ns: int) -> None:
        """A bus clock tick: the trailing evaluations now due (symbol order: the same
        in a replay)."""
        for symbol in sorted(s for s, due in self._due.items() if clock_ns >= due):
            del self._due[symbol]
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
            # Registered now, not in the task: its decision may be the very next input.
            self._inflight[intent.intent_id] = intent
            if self._verify:  # compared by replay --verify, never sent
                self.publish(intent, f"verify.intent.{intent.symbol}")
                continue
            self.spawn(self._submit(intent), f"submit-{intent.intent_id}")
        for cancel in out.cancels:
            self.counters["cancels"] += 1
            self.spawn(self._cancel(cancel), f"cancel-{cancel.client_order_id}")

    async def _cancel(self, cancel: CancelOrder) -> None:
        if self._verify:
            self.counters["cancels_not_sent"] += 1
            return
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
        announced = False

        def announce() -> None:
            nonlocal announced
            announced = True
            self.publish(intent)  # risk judges it where it comes on the bus

        try:
            # The request goes first: the announcement wakes every subscriber.
            reply = await self.risk.request(SubmitIntent(intent=intent), after_send=announce)
        except RequestFailed as exc:
            self.counters["risk_unreachable"] += 1
            logger.error("strategy: risk did not take {}: {}", intent.intent_id, exc)
            self._decide_ourselves(intent, "rejected", ["risk:unreachable"], str(exc))
            return
        finally:
            if not announced:  # never sent: still on the record
                announce()
        if not isinstance(reply, IntentAck):
            self.counters["risk_bad_reply"] += 1
            self._decide_ourselves(intent, "rejected", ["risk:bad_reply"], repr(reply)[:200])
            return
        # Risk published its decision before it answered; the copy on the bus is the one
        # applied. Should it not come (lost on the bus), the answer stands in for it.
        for _ in range(int(DECISION_WAIT_S / 0.05)):
            if intent.intent_id not in self._inflight:
                return
            await asyncio.sleep(0.05)
        if intent.intent_id in self._inflight:
            self.counters["decision_not_on_bus"] += 1
            logger.warning("strategy: risk's decision on {} did not come on the bus; its "
                           "answer ({}) is published in its place", intent.intent_id,
                           reply.verdict)
            self._decide_ourselves(intent, reply.verdict, list(reply.reasons), "risk's reply")

    def _decide_ourselves(self, intent: Intent, verdict: str, reasons: list[str],
                          why: str) -> None:
        """An outcome risk did not publish, published by us on ``intent.outcome.<SYM>``
        (the strategy may not speak on risk's ``decision.`` topics, bus/roles.py) and
        applied when it comes back on the bus, like any decision."""
        cid = client_order_id(self.cfg.executor.client_id_prefix, intent.intent_id)
        approved = verdict in ("approved", "resized")
        self.publish(RiskDecision(
            intent_id=intent.intent_id, symbol=intent.symbol,
            verdict=verdict,  # type: ignore[arg-type]
            reasons=reasons, side=intent.side, order_type=intent.order_type,
            price=intent.price, quantity=intent.quantity if approved else Decimal(0),
            requested_quantity=intent.quantity, client_order_id=cid if approved else "",
            executor_status=f"strategy: {why}"[:200]), f"{OUTCOME_TOPIC}{intent.symbol}")

    def _on_decision(self, d: RiskDecision) -> None:
        """Risk's verdict (or ours, see _decide_ourselves) on one of our intents."""
        intent = self._inflight.pop(d.intent_id, None)
        if intent is None:
            self.counters["decisions_not_ours"] += 1
            return
        symbol = intent.symbol
        gating.end_intent(self.gate, symbol, intent.intent_id)
        # One line per decision, what `logs strategy -f` shows.
        logger.info("strategy: {} {} {} {:.8g}@{} because {} -> {}{} [{}]", symbol, intent.side,
                    intent.order_type, intent.quantity, intent.price, intent.reason or "-",
                    d.verdict, f" ({', '.join(d.reasons)})" if d.reasons else "",
                    intent.intent_id)
        self.counters[f"ack_{d.verdict}"] += 1
        if d.verdict in ("approved", "resized"):
            cid = d.client_order_id or client_order_id(self.cfg.executor.client_id_prefix,
                                                       intent.intent_id)
            self.host.approved(intent, cid, self._input_no)
            return
        if "executor:duplicate" in d.reasons and gating.duplicate(
                self.gate, symbol, self._input_no):
            self._refresh.set()
            return
        # Back off from the later of the intent's clock and the latest book's: an
        # outcome that took timeouts to learn must not end the backoff at once.
        self._after_rejection(symbol, max(intent.created_wall_ns,
                                          self.host.clock_of.get(symbol, 0)))

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
