"""Strategy actor: nothing before the executor snapshot; then book -> intent -> risk,
one at a time per symbol; a cancelled order moves the id on; a restart re-sends the
same id for the same state."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

from actors.strategy.actor import StrategyActor
from bus.messages import (
    Balance,
    BookSnapshot,
    CommandRequest,
    Envelope,
    Intent,
    IntentAck,
    KeyCounts,
    Latches,
    OrderEvent,
    Packet,
    PortfolioSnapshot,
    SnapshotQuery,
    SubmitIntent,
    SymbolRules,
)
from bus.transport import CommandError, RequestServer
from shared.config import Config
from shared.fsm import State
from shared.ids import client_order_id

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


def make_actor(tmp: Path) -> tuple[StrategyActor, list]:
    cfg = Config()
    cfg.runtime_dir = str(tmp)
    cfg.base_dir = str(tmp)
    cfg.strategy.throttle_ms = 0
    cfg.strategy.reject_backoff_s = 0.0
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
        assert isinstance(req.body, SnapshotQuery)
        return SNAP

    async def risk(req: CommandRequest):
        assert isinstance(req.body, SubmitIntent)
        intents.append(req.body.intent)
        return IntentAck(intent_id=req.body.intent.intent_id, verdict="approved", reasons=[])

    servers = [RequestServer(actor.ctx, actor.cfg.command_endpoint("executor"), executor),
               RequestServer(actor.ctx, actor.cfg.command_endpoint("risk"), risk)]
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        await actor.setup()
        await scenario(intents)
    finally:
        for t in [*tasks, *actor._tasks]:
            t.cancel()
        await asyncio.gather(*tasks, *actor._tasks, return_exceptions=True)
        for s in servers:
            s.close()
        await actor.teardown()
        actor.ctx.destroy(0)
    return intents


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


def test_restart_reproduces_the_same_intent_id(tmp_path):
    ids = []
    for run in range(2):
        actor, _ = make_actor(tmp_path / str(run))
        (tmp_path / str(run)).mkdir()
        up = asyncio.Event()
        up.set()

        async def scenario(intents, actor=actor, run=run):
            await actor.on_message("md.rules.ETHTRY", pkt(RULES))
            for _ in range(50):
                await asyncio.sleep(0.05)
                await actor.on_message("md.book.ETHTRY", pkt(book(run)))
                if intents:
                    break

        got = asyncio.run(run_with(actor, up, scenario))
        ids.append(got[0].intent_id)
    assert ids[0] == ids[1]
