"""The venue's word on one order is read by several tasks at once (a cancel's read-back,
a private-feed refresh, the open-orders poll), each with the row as it was before its
await. Two readers of the same change publish one event, and a read older than the row
never takes it back (actors/executor/orders.py, ``record_exchange_order``)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from actors.executor.actor import ExecutorActor
from actors.executor.db import OrderRow
from bus.messages import OrderEvent
from shared.btcturk.models import ExchangeOrder
from shared.config import Config
from shared.fsm import State

D = Decimal
CID = "bb-test-1"
OID = 777


def exchange_order(status: str, left: str) -> ExchangeOrder:
    return ExchangeOrder(id=OID, client_order_id=CID, pair="BTCTRY", side="buy",
                         method="limit", price=D(3_500_000), amount=D("0.001"),
                         left_amount=D(left), status=status, time_ms=1, update_time_ms=1)


class GatedVenue:
    """``get_order`` answers what the test says, when the test says."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[tuple[asyncio.Event, ExchangeOrder]] = asyncio.Queue()

    async def get_order(self, oid: int) -> ExchangeOrder:
        gate, eo = await self.answers.get()
        await gate.wait()
        return eo

    async def close(self) -> None:
        pass


def make_actor(tmp_path: Path) -> tuple[ExecutorActor, list[OrderEvent]]:
    cfg = Config(mode="dry-run")
    cfg.runtime_dir = str(tmp_path)
    cfg.base_dir = str(tmp_path)
    cfg.executor.db_path = str(tmp_path / "data" / "x.db")
    actor = ExecutorActor(cfg)
    actor.fsm.to(State.LOCKING, "test")
    events: list[OrderEvent] = []
    actor.s.publish = lambda body, topic=None: (  # type: ignore[assignment]
        events.append(body) if isinstance(body, OrderEvent) else None)
    return actor, events


def test_two_readers_of_one_cancel_publish_one_event_and_an_old_read_changes_nothing(
        tmp_path: Path) -> None:
    actor, events = make_actor(tmp_path)
    venue = GatedVenue()

    async def scenario() -> None:
        await actor.setup()
        s = actor.s
        s.venue = venue  # type: ignore[assignment]
        s.db.reserve_order(OrderRow(CID, "i-1", "dry-run", "BTCTRY", "buy", "limit",
                                    D(3_500_000), D("0.001"), D(0), "PENDING", None, 600.0,
                                    "test", False, 1.0, 1.0), retention_s=3600)
        s.db.update_order(CID, 2.0, state="OPEN", exchange_order_id=OID)
        # Three reads in flight, all started on the OPEN row: two see it canceled after
        # a partial fill, the third (an older read) still sees it untouched.
        first, second, old = asyncio.Event(), asyncio.Event(), asyncio.Event()
        for gate, eo in ((first, exchange_order("Canceled", "0.0004")),
                         (second, exchange_order("Canceled", "0.0004")),
                         (old, exchange_order("Untouched", "0.001"))):
            venue.answers.put_nowait((gate, eo))
        reads = [asyncio.create_task(actor.orders.refresh_order(CID)) for _ in range(3)]
        await asyncio.sleep(0)
        for gate in (first, second, old):
            gate.set()
            await asyncio.sleep(0)
        await asyncio.gather(*reads)
        row = s.db.get_order(CID)
        assert row is not None
        assert (row.state, row.filled_quantity) == ("CANCELED", D("0.0006"))

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(actor.teardown())
        actor.ctx.destroy(0)
    assert [(e.state, e.filled_quantity) for e in events] == [("CANCELED", D("0.0006"))]
    assert actor.counters["stale_order_reads"] == 1
