"""Pure order-book assembly from BTCTurk WebSocket events (no I/O).

The ``orderbook`` channel (431) sends full snapshots; the ``obdiff`` channel (432)
sends changes against the last snapshot. We keep one ``LocalBook`` per symbol and
hand out the top N levels. A diff whose change set is not newer than the book is
ignored (replayed or reordered frame); a diff without a snapshot is ignored too
(we cannot know the rest of the book).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter

Level = tuple[Decimal, Decimal]

# BTCTurk obdiff change codes (CP): 0 updated, 1 new, 3 deleted.
CHANGE_DELETE = 3
_PRICE = itemgetter(0)  # a level's sort key, in C (a book is sorted on every frame)


@dataclass
class LocalBook:
    symbol: str
    change_set: int = -1
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        return self.change_set >= 0

    def apply_snapshot(self, change_set: int, bids: list[Level], asks: list[Level]) -> None:
        self.change_set = change_set
        self.bids = {p: a for p, a in bids if a > 0}
        self.asks = {p: a for p, a in asks if a > 0}

    def apply_diff(
        self,
        change_set: int,
        bids: list[tuple[Decimal, Decimal, int]],
        asks: list[tuple[Decimal, Decimal, int]],
    ) -> bool:
        """Apply (price, amount, change) rows. Returns False when ignored."""
        if not self.has_data or change_set <= self.change_set:
            return False
        for side, rows in ((self.bids, bids), (self.asks, asks)):
            for price, amount, change in rows:
                if change == CHANGE_DELETE or amount <= 0:
                    side.pop(price, None)
                else:
                    side[price] = amount
        self.change_set = change_set
        return True

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """Best levels first: bids descending, asks ascending (by price: the keys are
        unique, so no two levels tie)."""
        bids = sorted(self.bids.items(), key=_PRICE, reverse=True)[:depth]
        asks = sorted(self.asks.items(), key=_PRICE)[:depth]
        return bids, asks


def is_sane(bids: list[Level], asks: list[Level]) -> bool:
    """A book we are willing to publish: both sides present and not crossed.
    A crossed or one-sided book is bad input, not a trading signal."""
    if not bids or not asks:
        return False
    return bids[0][0] < asks[0][0]
