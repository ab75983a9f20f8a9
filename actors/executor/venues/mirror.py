"""The replay mirror venue (``executor.replay_mirror``, only for ``replay --verify``, only
in dry-run).

The replayed recording already carries the recorded executor's order, fill and portfolio
messages, so this venue sends nothing (``sends = False``: a SubmitOrder is only reserved
in the temp DB, so a repeated key answers ``duplicate``), simulates no fills and runs no
background loop (``follows = False``: nothing may publish). Snapshots are the latest
recorded ``portfolio`` (before any: an empty snapshot marked ``recovering``, which is
what a fresh dry-run executor answers too). Strategy and risk apply only the snapshots
that come on the bus, so the reply's copy is never a decision input: the recorded
``portfolio`` messages are, replayed at their recorded places.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from actors.executor.db import OrderRow
from actors.executor.venues.dryrun import SimFill
from actors.executor.venues.local import LocalVenue, VenueUnreadable
from bus.messages import KeyCounts, Latches, Msg, PortfolioSnapshot


class MirrorVenue(LocalVenue):
    name = "mirror"
    sends = False
    follows = False
    subscriptions = ("portfolio", "order.", "fill.")

    def __init__(self, counters: Any) -> None:
        self.counters = counters
        self._snap: PortfolioSnapshot | None = None

    async def submit(self, symbol: str, side: str, quantity: Decimal, price: Decimal,
                     client_order_id: str) -> int:
        raise VenueUnreadable("the replay mirror never sends")

    async def cancel(self, order_id: int) -> None:
        raise VenueUnreadable("the replay mirror never sends")

    def on_bus(self, body: Msg, open_orders: Callable[[str], list[OrderRow]]
               ) -> list[tuple[OrderRow, SimFill, str]]:
        if isinstance(body, PortfolioSnapshot):
            self._snap = body
            self.counters["mirror_snapshots"] += 1
        return []

    async def recorded_portfolio(self) -> PortfolioSnapshot | None:
        if self._snap is None:
            return PortfolioSnapshot(positions=[], balances=[], open_orders=[],
                                     latches=Latches(), keys=KeyCounts(), recovering=True)
        return self._snap

    async def close(self) -> None:
        return None
