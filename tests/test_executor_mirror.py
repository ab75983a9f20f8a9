"""Executor mirror mode (replay --verify): no events of its own, snapshots mirror the
recorded `portfolio`, orders are only reserved (duplicates stay duplicates), and the
mode is refused outside dry-run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from actors.executor.actor import ExecutorActor
from bus.messages import (
    Balance,
    CommandRequest,
    Envelope,
    KeyCounts,
    Latches,
    OrderEvent,
    Packet,
    PortfolioSnapshot,
    Position,
    SnapshotQuery,
    SubmitOrder,
)
from shared.config import Config
from shared.fsm import State
from tests.executor_harness import order

REPO = Path(__file__).resolve().parent.parent
D = Decimal


def snap(free: int, qty: str = "0", kill: bool = False) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        positions=[Position(symbol="BTCTRY", quantity=D(qty), avg_cost=D(2_500_000),
                            realized_pnl=D(0), fees=D(0))],
        balances=[Balance(asset="TRY", free=D(free), locked=D(0))], open_orders=[],
        latches=Latches(kill_switch=kill, reason="recorded" if kill else ""), keys=KeyCounts())


def pkt(body) -> Packet:
    return Packet(Envelope(1, "replay/executor/portfolio", "r", 1, time.time_ns(), 0), body)


def req(body, n: int) -> CommandRequest:
    return CommandRequest(request_id=f"r{n}", sender="test", body=body)


def test_mirror_answers_recorded_snapshots_and_publishes_nothing(tmp_path: Path) -> None:
    cfg = Config(mode="dry-run")
    cfg.runtime_dir = str(tmp_path)
    cfg.base_dir = str(tmp_path)
    cfg.executor.db_path = str(tmp_path / "data" / "m.db")
    cfg.executor.replay_mirror = True
    actor = ExecutorActor(cfg)
    actor.fsm.to(State.LOCKING, "test")
    published: list = []
    actor.publish = lambda body, topic=None: published.append(body)  # type: ignore[method-assign]
    assert set(actor.subscriptions) == {"portfolio", "order.", "fill."}

    async def scenario() -> None:
        await actor.setup()
        assert not actor._tasks  # no probe/portfolio/poll loop that could publish
        first = await actor.handle_command(req(SnapshotQuery(), 1))
        assert isinstance(first, PortfolioSnapshot) and first.recovering
        assert first.positions == [] and first.balances == []
        recorded = snap(50_000, "0.001", kill=True)
        await actor.on_message("portfolio", pkt(recorded))
        assert await actor.handle_command(req(SnapshotQuery(), 2)) == recorded  # latches too
        o = order("BTCTRY-buy-1")
        ack = await actor.handle_command(req(SubmitOrder(order=o), 3))
        assert (ack.status, ack.key_status) == ("accepted", "PENDING")
        again = await actor.handle_command(req(SubmitOrder(order=o), 4))
        assert again.status == "duplicate"
        # Asked to publish (as strategy and risk ask), it still publishes nothing: the
        # recorded snapshots are replayed; a recorded order event changes no answer.
        await actor.on_message("order.BTCTRY", pkt(OrderEvent(
            client_order_id=o.client_order_id, intent_id=o.intent_id, symbol="BTCTRY",
            side="buy", state="FILLED", price=o.price, quantity=o.quantity,
            filled_quantity=o.quantity)))
        assert await actor.handle_command(req(SnapshotQuery(publish=True), 5)) == recorded
        later = snap(40_000, "0.002")
        await actor.on_message("portfolio", pkt(later))
        assert await actor.handle_command(req(SnapshotQuery(publish=True), 6)) == later
        await asyncio.sleep(0.6)  # a normal executor would have published by now

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(actor.teardown())
        actor.ctx.destroy(0)
    assert published == []
    assert actor.counters["accepted"] == 1 and actor.counters["duplicates"] == 1


def test_mirror_outside_dry_run_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'mode = "paper"\nruntime_dir = "{tmp_path}/run"\nlog_dir = '
                   f'"{tmp_path}/logs"\n[executor]\ndb_path = "{tmp_path}/data/x.db"\n'
                   'replay_mirror = true\n')
    r = subprocess.run([sys.executable, "-m", "actors.executor", "--config", str(cfg)],
                       cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "replay_mirror" in r.stderr and "dry-run" in r.stderr
