"""Strategy actor: nothing before the executor snapshot; then book -> intent -> risk,
one at a time per symbol; a cancelled order moves the id on; a restart re-sends the
same id for the same state. Snapshots and verdicts are applied as they come on the bus
(the stand-in executor and risk below put them there, as the real ones publish them),
and the throttle's trailing edge runs on the bus clock."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import msgspec

from actors.strategy.actor import StrategyActor
from bus.messages import (
    Balance,
    BookSnapshot,
    CommandRequest,
    Envelope,
    ExecutorCommand,
    Intent,
    IntentAck,
    KeyCounts,
    Latches,
    OrderEvent,
    Packet,
    PortfolioSnapshot,
    RiskCommand,
    RiskDecision,
    SnapshotQuery,
    SubmitIntent,
    SymbolRules,
)
from bus.transport import CommandError
from shared.config import Config
from shared.fsm import State
from shared.ids import client_order_id
from tests.keys import StandIn, disk_keys

D = Decimal


def pkt(body) -> Packet:
    return Packet(Envelope(1, "t", "x", 1, time.time_ns(), time.monotonic_ns()), body)


def book(n: int) -> BookSnapshot:
    return BookSnapshot(symbol="ETHTRY", bids=[(D(140000), D(1))], asks=[(D(140010), D(1))],
                        source="ws", exchange_ts_ms=0, recv_wall_ns=time.time_ns(),
                        recv_mono_ns=time.monotonic_ns(), age_ms=0, change_set=n)


RULES = SymbolRules(symbol="ETHTRY", base="ETH", quote="TRY", price_scale=2, qty_scale=8,
                    tick_size=D(1), min_price=D(0), max_price=D(0), min_total=D(0))
SNAP = PortfolioSnapshot(positions=[], balances=[Balance(asset="TRY", free=D(1000),
                                                         locked=D(0))],
                         open_orders=[], latches=Latches(), keys=KeyCounts())


def on_bus(actor: StrategyActor, topic: str, body) -> None:
    """What the real executor or risk publishes, arriving at the actor."""
    asyncio.get_running_loop().create_task(actor.on_message(topic, pkt(body)))


def decision_for(i: Intent, verdict: str, reasons: list[str]) -> RiskDecision:
    approved = verdict != "rejected"
    return RiskDecision(intent_id=i.intent_id, symbol=i.symbol, verdict=verdict,
                        reasons=reasons, side=i.side, order_type=i.order_type, price=i.price,
                        quantity=i.quantity if approved else D(0),
                        requested_quantity=i.quantity,
                        client_order_id=client_order_id("bb", i.intent_id) if approved else "")


def make_actor(tmp: Path) -> tuple[StrategyActor, list]:
    cfg = Config()
    cfg.runtime_dir = str(tmp)
    cfg.base_dir = str(tmp)
    cfg.strategy.throttle_ms = 0
    cfg.strategy.reject_backoff_s = 0.0
    disk_keys(cfg)
    actor = StrategyActor(cfg)
    actor.fsm.to(State.LOCKING, "test")
    published: list = []
    actor.publish = lambda body, topic=None: published.append(body)  # type: ignore[method-assign]
    return actor, published


async def run_with(actor: StrategyActor, executor_up: asyncio.Event, scenario):
    intents: list[Intent] = []

    async def executor(req: CommandRequest):
        if not executor_up.is_set():
            raise CommandError("not yet")  # the strategy must retry
        assert isinstance(req.body, SnapshotQuery) and req.body.publish
        on_bus(actor, "portfolio", SNAP)
        return SNAP

    async def risk(req: CommandRequest):
        assert isinstance(req.body, SubmitIntent)
        intents.append(req.body.intent)
        on_bus(actor, "decision.ETHTRY", decision_for(req.body.intent, "approved", []))
        return IntentAck(intent_id=req.body.intent.intent_id, verdict="approved", reasons=[])

    await against(actor, executor, risk, lambda: scenario(intents))
    return intents


async def against(actor: StrategyActor, executor, risk, scenario) -> None:
    """Set the actor up against stand-in executor and risk servers, run ``scenario()``,
    then stop everything."""
    servers = [StandIn(actor.cfg, "executor", executor, ExecutorCommand),
               StandIn(actor.cfg, "risk", risk, RiskCommand)]
    try:
        await actor.setup()
        await scenario()
    finally:
        for t in actor._tasks:
            t.cancel()
        await asyncio.gather(*actor._tasks, return_exceptions=True)
        for s in servers:
            await s.close()
        await actor.teardown()
        actor.ctx.destroy(0)


def test_nothing_before_snapshot_then_one_intent_per_open_order(tmp_path):
    actor, published = make_actor(tmp_path)
    up = asyncio.Event()

    async def scenario(intents):
        await actor.on_message("md.rules.ETHTRY", pkt(RULES))
        await actor.on_message("md.book.ETHTRY", pkt(book(1)))
        await asyncio.sleep(0.5)
        assert intents == [] and actor.fsm.state == State.DEGRADED_RECOVERY
        up.set()
        for _ in range(50):
            await asyncio.sleep(0.05)
            if intents:
                break
        assert len(intents) == 1 and actor.fsm.state == State.READY
        first = intents[0]
        # The approved order is open: more books do not produce a second intent.
        for n in range(2, 6):
            await actor.on_message("md.book.ETHTRY", pkt(book(n)))
        await asyncio.sleep(0.2)
        assert len(intents) == 1
        # It gets cancelled unfilled: after the refreshed snapshot, a NEW id.
        cid = client_order_id("bb", first.intent_id)
        await actor.on_message("order.ETHTRY", pkt(OrderEvent(
            client_order_id=cid, intent_id=first.intent_id, symbol="ETHTRY", side="buy",
            state="CANCELED", price=first.price, quantity=first.quantity,
            filled_quantity=D(0))))
        for _ in range(50):
            await asyncio.sleep(0.05)
            await actor.on_message("md.book.ETHTRY", pkt(book(10)))
            if len(intents) > 1:
                break
        assert len(intents) == 2 and intents[1].intent_id != first.intent_id

    intents = asyncio.run(run_with(actor, up, scenario))
    assert [p for p in published if isinstance(p, Intent)] == intents


def _first_intent_id(tmp: Path) -> str:
    tmp.mkdir(exist_ok=True)
    actor, _ = make_actor(tmp)
    up = asyncio.Event()
    up.set()

    async def scenario(intents, actor=actor):
        await actor.on_message("md.rules.ETHTRY", pkt(RULES))
        for _ in range(50):
            await asyncio.sleep(0.05)
            await actor.on_message("md.book.ETHTRY", pkt(book(0)))
            if intents:
                break

    got = asyncio.run(run_with(actor, up, scenario))
    return got[0].intent_id


def test_a_restart_never_reuses_an_intent_id_but_a_fixed_boot_reproduces_it(tmp_path,
                                                                            monkeypatch):
    """The same decision on the same state: a new id after every restart (the persisted
    boot number moves on), the same id when the boot is fixed (replay uses the recorded
    one)."""
    first, second = _first_intent_id(tmp_path), _first_intent_id(tmp_path)
    assert first != second
    assert (tmp_path / "data" / "strategy.boot").read_text().strip() == "2"
    monkeypatch.setenv("BTCBOT_STRATEGY_BOOT", "7")
    assert _first_intent_id(tmp_path / "a") == _first_intent_id(tmp_path / "b")


def test_a_bad_plugin_or_parameter_exits_2_naming_the_field(tmp_path):
    from actors.runtime import EXIT_CONFIG, FatalActorError
    for table, field in (({"plugin": "nosuch.module:Nope"}, "strategy.plugin"),
                         ({"plugin": "profit_aware", "params": {"min_profit_bps": "x"}},
                          "strategy.min_profit_bps"),
                         ({"plugin": "profit_aware", "params": {"colour": 1}},
                          "strategy.colour"),
                         ({"plugin": "inventory_mm", "params": {"requote_bps": 0}},
                          "requote_bps")):
        cfg = Config()
        cfg.base_dir = str(tmp_path)
        cfg.strategy.plugin = table["plugin"]
        cfg.strategy.params = table.get("params", {})
        try:
            StrategyActor(cfg)
        except FatalActorError as exc:
            assert exc.exit_code == EXIT_CONFIG and field in str(exc), exc
        else:
            raise AssertionError(f"{table} was accepted")


def test_decisions_follow_the_message_clock_not_the_wall_clock(tmp_path, monkeypatch):
    """The same messages give the same intents (ids, created_wall_ns) and the same reject
    backoff, whatever the wall clock says: replay --verify depends on it."""
    t0 = 1_700_000_000 * 10**9  # the recorded session's clock, far from today's

    def clocked(n: int, at_ns: int) -> Packet:
        b = msgspec.structs.replace(book(n), recv_wall_ns=at_ns, recv_mono_ns=n)
        return Packet(Envelope(1, "t", "x", n, at_ns, 0), b)

    async def session(actor: StrategyActor) -> list[Intent]:
        intents: list[Intent] = []

        async def executor(req: CommandRequest):
            on_bus(actor, "portfolio", SNAP)
            return SNAP

        async def risk(req: CommandRequest):
            intents.append(req.body.intent)
            verdict = "rejected" if len(intents) == 1 else "approved"
            reasons = ["limit:cooldown"] if verdict == "rejected" else []
            on_bus(actor, "decision.ETHTRY", decision_for(req.body.intent, verdict, reasons))
            return IntentAck(intent_id=req.body.intent.intent_id, verdict=verdict,
                             reasons=reasons)

        async def scenario() -> None:
            for _ in range(200):
                if actor.synced:
                    break
                await asyncio.sleep(0.01)
            assert actor.synced
            await actor.on_message("md.rules.ETHTRY", pkt(RULES))
            # 0 s: intent, rejected -> back off 5 s of MESSAGE clock; 1..4 s: skipped;
            # 6 s: the same decision again (same id), approved.
            for n, at_s in enumerate((0, 1, 2, 4, 6), start=1):
                await actor.on_message("md.book.ETHTRY", clocked(n, t0 + at_s * 10**9))
                await asyncio.sleep(0.15)

        await against(actor, executor, risk, scenario)
        return intents

    runs = []
    real = time.time_ns
    for shift_days in (0, 3, -400):
        monkeypatch.setattr(time, "time_ns", lambda s=shift_days: real() + s * 86_400 * 10**9)
        actor, _ = make_actor(tmp_path / str(shift_days))
        actor.cfg.strategy.throttle_ms = 500
        actor.cfg.strategy.reject_backoff_s = 5.0
        runs.append(asyncio.run(session(actor)))
    monkeypatch.setattr(time, "time_ns", real)
    assert [len(r) for r in runs] == [2, 2, 2]
    first = runs[0]
    assert first[0].created_wall_ns == t0 and first[1].created_wall_ns == t0 + 6 * 10**9
    assert first[0].intent_id == first[1].intent_id  # same state, same decision
    assert runs[1] == first and runs[2] == first


def test_a_raising_plugin_is_logged_counted_and_paused_and_the_actor_lives(tmp_path):
    actor, _ = make_actor(tmp_path)
    from actors.strategy.host import StrategyHost
    from tests.test_strategy_plugins import Fragile

    actor.host = StrategyHost(Fragile(Fragile.Params()), boot=1)
    btc_rules = msgspec.structs.replace(RULES, symbol="BTCTRY")
    up = asyncio.Event()
    up.set()

    async def scenario(intents):
        for _ in range(100):
            if actor.synced:
                break
            await asyncio.sleep(0.02)
        await actor.on_message("md.rules.BTCTRY", pkt(btc_rules))
        await actor.on_message("md.rules.ETHTRY", pkt(RULES))
        await actor.on_message("md.book.BTCTRY", pkt(msgspec.structs.replace(
            book(1), symbol="BTCTRY")))
        await actor.on_message("md.book.ETHTRY", pkt(book(2)))
        for _ in range(50):
            await asyncio.sleep(0.05)
            if intents:
                break

    intents = asyncio.run(run_with(actor, up, scenario))
    assert actor.counters["plugin_errors"] == 1
    assert actor.heartbeat_info().plugin_paused == ["BTCTRY"]
    assert [i.symbol for i in intents] == ["ETHTRY"]  # the other symbol still trades


def test_the_trailing_evaluation_runs_on_the_bus_clock_not_a_timer(tmp_path):
    """Throttled books: the last book of a burst is evaluated when a bus clock tick at
    or after the window's end comes, and not before, however long the wall clock runs."""
    from bus.messages import ClockTick
    actor, _ = make_actor(tmp_path)
    actor.cfg.strategy.throttle_ms = 500
    actor.host.gate.synced = True
    t0 = 1_700_000_000 * 10**9

    def at(body, wall: int) -> Packet:
        return Packet(Envelope(1, "marketdata", "m", 1, wall, 0), body)

    async def scenario() -> None:
        await actor.on_message("md.rules.ETHTRY", pkt(RULES))
        await actor.on_message("md.book.ETHTRY", at(book(1), t0))
        await actor.on_message("md.book.ETHTRY", at(book(2), t0 + 100 * 10**6))
        assert actor.counters["evaluations"] == 1
        await asyncio.sleep(0.7)  # a loop timer would have fired by now
        assert actor.counters["evaluations"] == 1
        await actor.on_message("md.clock", at(ClockTick(interval_ms=100), t0 + 400 * 10**6))
        assert actor.counters["evaluations"] == 1
        await actor.on_message("md.clock", at(ClockTick(interval_ms=100), t0 + 500 * 10**6))
        assert actor.counters["evaluations"] == 2
        await actor.on_message("md.clock", at(ClockTick(interval_ms=100), t0 + 600 * 10**6))
        assert actor.counters["evaluations"] == 2  # once per window

    asyncio.run(scenario())
    actor.ctx.destroy(0)


def test_unreachable_risk_is_a_published_decision_applied_from_the_bus(tmp_path):
    """Even the failure is a recorded input: the strategy publishes 'risk:unreachable'
    as a decision of its own and leaves the pending state only when it comes back."""
    actor, published = make_actor(tmp_path)
    actor.cfg.risk.executor_timeout_s = 0.05
    actor.cfg.risk.executor_retries = 0
    seen: list = []

    async def executor(req: CommandRequest):
        on_bus(actor, "portfolio", SNAP)
        return SNAP

    async def risk(req: CommandRequest):
        seen.append(req.body.intent)
        await asyncio.sleep(30)  # never answers in time

    async def scenario() -> None:
        import actors.strategy.actor as strategy_actor
        for _ in range(100):
            if actor.synced:
                break
            await asyncio.sleep(0.02)
        actor.risk.timeout_s = 0.2  # type: ignore[union-attr]
        actor.risk.retries = 0  # type: ignore[union-attr]
        await actor.on_message("md.rules.ETHTRY", pkt(RULES))
        await actor.on_message("md.book.ETHTRY", pkt(book(1)))
        for _ in range(100):
            if any(isinstance(b, RiskDecision) for b in published):
                break
            await asyncio.sleep(0.05)
        own = [b for b in published if isinstance(b, RiskDecision)]
        assert len(own) == 1 and own[0].reasons == ["risk:unreachable"], own
        assert "ETHTRY" in actor.gate.pending  # not applied before it comes on the bus
        await actor.on_message("decision.ETHTRY", pkt(own[0]))
        assert "ETHTRY" not in actor.gate.pending
        assert actor.gate.backoff_until["ETHTRY"] > 0
        assert strategy_actor.DECISION_WAIT_S > 0

    asyncio.run(against(actor, executor, risk, scenario))
    assert len(seen) == 1
