"""Risk actor I/O: approved orders reach the executor with the deterministic client
order id; a refused or unreachable executor is a published rejection, never a drop."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

from actors.risk.actor import RiskActor
from actors.risk.state import apply_book, apply_feed_status, apply_rules, apply_snapshot
from bus.messages import (
    Balance,
    BookSnapshot,
    CancelOrder,
    CommandRequest,
    Envelope,
    ExecutorCommand,
    FeedStatus,
    Intent,
    IntentAck,
    KeyCounts,
    Latches,
    OrderAck,
    Packet,
    PortfolioSnapshot,
    RiskDecision,
    SubmitOrder,
    SymbolRules,
)
from bus.transport import CommandError
from shared.config import Config
from shared.fsm import State
from shared.ids import client_order_id
from tests.keys import StandIn, disk_keys

D = Decimal


def make_actor(tmp: Path) -> tuple[RiskActor, list]:
    cfg = Config()
    cfg.runtime_dir = str(tmp)
    cfg.base_dir = str(tmp)
    cfg.risk.executor_timeout_s = 0.3
    cfg.risk.executor_retries = 0
    disk_keys(cfg)
    actor = RiskActor(cfg)
    actor.fsm.to(State.LOCKING, "test")
    published: list = []
    actor.publish = lambda body, topic=None: published.append(body)  # type: ignore[method-assign]
    now = time.time_ns()
    st = actor.state
    apply_rules(st, SymbolRules(symbol="ETHTRY", base="ETH", quote="TRY", price_scale=2,
                                qty_scale=8, tick_size=D(1), min_price=D(0), max_price=D(0),
                                min_total=D("99.91")))
    apply_feed_status(st, FeedStatus(symbol="ETHTRY", fresh=True, source="ws", age_ms=0))
    apply_book(st, BookSnapshot(symbol="ETHTRY", bids=[(D(140000), D(1))],
                                asks=[(D(140010), D(1))], source="ws", exchange_ts_ms=0,
                                recv_wall_ns=now, recv_mono_ns=0, age_ms=0))
    apply_snapshot(st, PortfolioSnapshot(
        positions=[], balances=[Balance(asset="TRY", free=D(100000), locked=D(0))],
        open_orders=[], latches=Latches(), keys=KeyCounts()), now, "TRY")
    return actor, published


def intent(n: int = 0) -> Intent:
    return Intent(intent_id=f"ETHTRY-buy-{n}", symbol="ETHTRY", side="buy", order_type="limit",
                  price=D("140010.123"), quantity=D("0.001"), reason="t", ttl_s=120,
                  strategy="s", created_wall_ns=time.time_ns())


async def submit(actor: RiskActor, i: Intent) -> IntentAck:
    """As the strategy does it: the request, and the intent's copy on the bus, where
    risk judges it (whichever of the two comes first)."""
    req = asyncio.create_task(actor.on_intent(i))
    await asyncio.sleep(0)
    await actor.on_message(f"intent.{i.symbol}", Packet(Envelope(1, "strategy", "s", 1, 0, 0), i))
    return await req


async def stop(actor: RiskActor) -> None:
    for task in list(actor._tasks):
        task.cancel()
    await asyncio.gather(*actor._tasks, return_exceptions=True)
    await actor.teardown()
    actor.ctx.destroy(0)


async def with_executor(actor: RiskActor, handler, body):
    server = StandIn(actor.cfg, "executor", handler, ExecutorCommand)
    try:
        await actor.setup()
        return await body()
    finally:
        await server.close()
        await stop(actor)


def test_approved_order_reaches_executor_with_deterministic_cid(tmp_path):
    actor, published = make_actor(tmp_path)
    received: list = []

    async def handler(req: CommandRequest):
        if isinstance(req.body, SubmitOrder):
            received.append(req.body.order)
            return OrderAck(client_order_id=req.body.order.client_order_id, status="accepted",
                            key_status="PENDING")
        return PortfolioSnapshot(positions=[], balances=[Balance(asset="TRY", free=D(100000),
                                                                 locked=D(0))],
                                 open_orders=[], latches=Latches(), keys=KeyCounts())

    async def body():
        ack = await submit(actor, intent())
        again = await submit(actor, intent())  # same id: same answer, no second order
        return ack, again

    ack, again = asyncio.run(with_executor(actor, handler, body))
    assert ack.verdict == "approved" and again == ack
    assert len(received) == 1
    order = received[0]
    assert order.client_order_id == client_order_id("bb", "ETHTRY-buy-0")
    assert (order.price, order.quantity) == (D("140010.12"), D("0.001"))
    decisions = [b for b in published if isinstance(b, RiskDecision)]
    assert len(decisions) == 1 and decisions[0].executor_status == "accepted:PENDING"
    assert actor.counters["approved"] == 1 and actor.counters["duplicate_intents"] == 1


def test_refused_executor_is_a_published_rejection(tmp_path):
    actor, published = make_actor(tmp_path)

    async def handler(req: CommandRequest):
        if isinstance(req.body, SubmitOrder):
            return OrderAck(client_order_id=req.body.order.client_order_id, status="rejected",
                            key_status="FAILED", reason="kill_switch")
        raise CommandError("no snapshot today")

    ack = asyncio.run(with_executor(actor, handler, lambda: submit(actor, intent())))
    assert ack.verdict == "rejected" and "executor:refused" in ack.reasons
    d = [b for b in published if isinstance(b, RiskDecision)][-1]
    assert d.verdict == "rejected" and d.executor_status.startswith("rejected:FAILED")
    assert actor.counters["reason.executor:refused"] == 1
    assert actor.state.open_count("ETHTRY") == 0  # it never existed


def test_unreachable_executor_is_a_published_rejection(tmp_path):
    actor, published = make_actor(tmp_path)

    async def body():
        await actor.setup()
        try:
            return await submit(actor, intent())
        finally:
            await stop(actor)

    ack = asyncio.run(body())
    assert ack.verdict == "rejected" and "executor:unreachable" in ack.reasons
    d = [b for b in published if isinstance(b, RiskDecision)][-1]
    assert d.executor_status.startswith("unreachable")
    # Ambiguous: it may have arrived, so it still counts as open until a snapshot says no.
    assert actor.state.open_count("ETHTRY") == 1


def test_stale_intent_is_rejected_as_expired(tmp_path):
    actor, published = make_actor(tmp_path)
    old = intent()
    old = Intent(**{**{f: getattr(old, f) for f in old.__struct_fields__},
                    "created_wall_ns": time.time_ns() - 60 * 10**9})
    ack = asyncio.run(submit(actor, old))
    assert ack.reasons == ["intent:expired"]
    assert isinstance(published[-1], RiskDecision) and published[-1].verdict == "rejected"


T0 = 1_700_000_000 * 10**9  # a recorded session's clock, far from today's


def clocked_actor(tmp: Path) -> tuple[RiskActor, list]:
    """A risk actor that learnt everything from bus messages stamped on T0's clock."""
    cfg = Config()
    cfg.runtime_dir = str(tmp)
    cfg.base_dir = str(tmp)
    cfg.risk.executor_timeout_s = 0.5
    cfg.risk.executor_retries = 0
    cfg.risk.snapshot_interval_s = 3600.0
    disk_keys(cfg)
    actor = RiskActor(cfg)
    actor.fsm.to(State.LOCKING, "test")
    published: list = []
    actor.publish = lambda body, topic=None: published.append(body)  # type: ignore[method-assign]
    return actor, published


async def feed(actor: RiskActor, at_ns: int, *bodies) -> None:
    for n, body in enumerate(bodies):
        topic = {"SymbolRules": "md.rules.ETHTRY", "FeedStatus": "md.status",
                 "BookSnapshot": "md.book.ETHTRY", "PortfolioSnapshot": "portfolio"}[
                     type(body).__name__]
        await actor.on_message(topic, Packet(Envelope(1, "t", "x", n + 1, at_ns, 0), body))


def market(at_ns: int):
    return (
        SymbolRules(symbol="ETHTRY", base="ETH", quote="TRY", price_scale=2, qty_scale=8,
                    tick_size=D(1), min_price=D(0), max_price=D(0), min_total=D("99.91")),
        FeedStatus(symbol="ETHTRY", fresh=True, source="ws", age_ms=0),
        BookSnapshot(symbol="ETHTRY", bids=[(D(140000), D(1))], asks=[(D(140010), D(1))],
                     source="ws", exchange_ts_ms=0, recv_wall_ns=at_ns, recv_mono_ns=0, age_ms=0),
    )


FUNDS = PortfolioSnapshot(positions=[], balances=[Balance(asset="TRY", free=D(100000),
                                                          locked=D(0))],
                          open_orders=[], latches=Latches(), keys=KeyCounts())


def clocked_intent(at_ns: int, n: int = 0) -> Intent:
    return Intent(intent_id=f"ETHTRY-buy-{n}", symbol="ETHTRY", side="buy", order_type="limit",
                  price=D("140010.123"), quantity=D("0.001"), reason="t", ttl_s=120,
                  strategy="s", created_wall_ns=at_ns)


def test_verdicts_follow_the_message_clock_not_the_wall_clock(tmp_path, monkeypatch):
    """The same messages and intents give the same verdicts whatever the wall clock
    says (replay --verify), including the age checks (intent expiry, executor state)."""
    async def handler(req: CommandRequest):
        if isinstance(req.body, SubmitOrder):
            return OrderAck(client_order_id=req.body.order.client_order_id, status="accepted",
                            key_status="PENDING")
        return FUNDS

    real = time.time_ns
    runs = []
    for shift_days in (0, 2, -300):
        monkeypatch.setattr(time, "time_ns", lambda s=shift_days: real() + s * 86_400 * 10**9)
        (tmp_path / str(shift_days)).mkdir()
        actor, published = clocked_actor(tmp_path / str(shift_days))

        async def body(actor=actor):
            await feed(actor, T0, *market(T0), FUNDS)
            first = await submit(actor, clocked_intent(T0 + 10**6, 1))
            # 1 s later (message clock): cooldown, whatever the wall clock.
            await feed(actor, T0 + 10**9, *market(T0 + 10**9))
            second = await submit(actor, clocked_intent(T0 + 10**9, 2))
            # An intent decided 20 s before the latest message clock: expired.
            await feed(actor, T0 + 21 * 10**9, *market(T0 + 21 * 10**9))
            third = await submit(actor, clocked_intent(T0 + 10**9, 3))
            # 40 s of market data without an executor snapshot: executor state stale.
            await feed(actor, T0 + 41 * 10**9, *market(T0 + 41 * 10**9))
            fourth = await submit(actor, clocked_intent(T0 + 41 * 10**9, 4))
            return [first, second, third, fourth]

        acks = asyncio.run(with_executor(actor, handler, body))
        runs.append(([(a.verdict, a.reasons) for a in acks],
                     [(d.verdict, d.reasons, d.price, d.quantity) for d in published
                      if isinstance(d, RiskDecision)]))
    monkeypatch.setattr(time, "time_ns", real)
    verdicts = runs[0][0]
    assert verdicts[0] == ("approved", [])
    assert verdicts[1] == ("rejected", ["limit:max_open_orders", "limit:cooldown"])
    assert verdicts[2] == ("rejected", ["intent:expired"])
    assert "gate:executor_state_stale" in verdicts[3][1]
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_silent_market_data_is_rejected_by_the_wall_clock_guard(tmp_path):
    """Marketdata dead: no stale status can come and the message clock stops; the one
    wall-clock guard rejects."""
    actor, published = clocked_actor(tmp_path)

    async def body():
        now = time.time_ns()
        await feed(actor, now, *market(now), FUNDS)
        assert actor.md_seen_mono is not None
        actor.md_seen_mono -= 16 * 10**9  # nothing on md.* for more than max_data_age
        return await submit(actor, clocked_intent(now))

    ack = asyncio.run(body())
    assert (ack.verdict, ack.reasons) == ("rejected", ["market_data:silent"])
    actor.ctx.destroy(0)


def test_an_intent_is_judged_where_its_copy_comes_on_the_bus(tmp_path):
    """The state an intent is judged on is the bus's up to the intent's copy, however
    late its request comes: a stale status after the copy does not change the verdict.
    A request whose copy never comes is judged after INTENT_WAIT_S, and counted."""
    from actors.risk import actor as risk_actor
    actor, published = clocked_actor(tmp_path)

    async def handler(req: CommandRequest):
        if isinstance(req.body, SubmitOrder):
            return OrderAck(client_order_id=req.body.order.client_order_id, status="accepted",
                            key_status="PENDING")
        return FUNDS

    async def body():
        await feed(actor, T0, *market(T0), FUNDS)
        i = clocked_intent(T0, 1)
        await actor.on_message("intent.ETHTRY", Packet(Envelope(1, "strategy", "s", 1, 0, 0), i))
        await feed(actor, T0 + 10**6, FeedStatus(symbol="ETHTRY", fresh=False, source="ws",
                                                 age_ms=99_000))
        first = await actor.on_intent(i)  # the request comes after the stale status
        risk_actor.INTENT_WAIT_S = 0.1
        lost = await actor.on_intent(clocked_intent(T0, 2))  # no copy on the bus
        return first, lost

    saved = risk_actor.INTENT_WAIT_S
    try:
        first, lost = asyncio.run(with_executor(actor, handler, body))
    finally:
        risk_actor.INTENT_WAIT_S = saved
    assert first.verdict == "approved", first.reasons
    assert lost.verdict == "rejected" and any("stale" in r for r in lost.reasons), lost.reasons
    assert actor.counters["intent_not_on_bus"] == 1
    assert [d.intent_id for d in published if isinstance(d, RiskDecision)] == [
        "ETHTRY-buy-1", "ETHTRY-buy-2"]


def test_a_strategy_cancel_is_forwarded_to_the_executor_by_risk(tmp_path):
    """Only risk may cancel at the executor (bus/roles.py), so a strategy's cancel goes
    through risk's command socket and risk passes it on, as itself."""
    actor, _published = make_actor(tmp_path)
    seen: list = []

    async def handler(req: CommandRequest):
        if isinstance(req.body, CancelOrder):
            seen.append((req.sender, req.body.client_order_id))
            return OrderAck(client_order_id=req.body.client_order_id, status="accepted",
                            key_status="COMMITTED")
        return PortfolioSnapshot(positions=[], balances=[], open_orders=[], latches=Latches(),
                                 keys=KeyCounts())

    async def body():
        req = CommandRequest("r1", "strategy", CancelOrder(client_order_id="c-1"))
        return await actor.handle_command(req)

    ack = asyncio.run(with_executor(actor, handler, body))
    assert isinstance(ack, OrderAck) and ack.client_order_id == "c-1"
    assert seen == [("risk", "c-1")]  # the executor saw risk's authenticated identity
    assert actor.counters["cancels_forwarded"] == 1
