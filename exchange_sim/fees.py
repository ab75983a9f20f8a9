"""Maker/taker fees from a volume-tiered schedule (pure).

A tier applies from a 30-day traded quote volume upwards, as exchanges' public fee tables
do. The default is one tier, 0.05 % maker / 0.09 % taker: ccxt's figures for BTCTurk
(``fees.trading`` in ccxt's ``ts/src/btcturk.ts``), a flat pair, not BTCTurk's own tier
table. That table (pro.btcturk.com's "Komisyonlar" page) was not available to us, so the
simulator does not invent its tiers; enter them with ``--fee-schedule`` to match.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

WINDOW_MS = 30 * 86_400_000

# ccxt's flat BTCTurk trading fees (see the module docstring for why not BTCTurk's tiers).
DEFAULT_MAKER = Decimal("0.0005")
DEFAULT_TAKER = Decimal("0.0009")


@dataclass(frozen=True)
class Tier:
    min_volume: Decimal  # 30-day quote volume from which the tier applies
    maker: Decimal
    taker: Decimal


class FeeScheduleError(ValueError):
    pass


def parse_schedule(text: str) -> tuple[Tier, ...]:
    """``"0:0.0005/0.001,1000000:0.0004/0.0009"`` -> tiers (volume:maker/taker)."""
    tiers = []
    for part in text.split(","):
        try:
            volume, rates = part.strip().split(":")
            maker, taker = rates.split("/")
            tiers.append(Tier(Decimal(volume), Decimal(maker), Decimal(taker)))
        except (ValueError, ArithmeticError) as exc:
            raise FeeScheduleError(f"bad tier {part!r}: want VOLUME:MAKER/TAKER") from exc
    return check_schedule(tiers)


def check_schedule(tiers: list[Tier] | tuple[Tier, ...]) -> tuple[Tier, ...]:
    ordered = tuple(sorted(tiers, key=lambda t: t.min_volume))
    if not ordered or ordered[0].min_volume != 0:
        raise FeeScheduleError("the first tier must start at volume 0")
    if any(t.maker < 0 or t.taker < 0 or t.maker > 1 or t.taker > 1 for t in ordered):
        raise FeeScheduleError("fee rates must be between 0 and 1")
    return ordered


class FeeSchedule:
    """Rates for the account's rolling 30-day quote volume."""

    def __init__(self, tiers: tuple[Tier, ...]) -> None:
        self.tiers = check_schedule(tiers)
        # Buys reserve at the highest taker rate: the tier may change (volume ages out)
        # between the order and its fill, and no fill may cost more than what is locked.
        self.max_taker = max(t.taker for t in self.tiers)
        self._fills: deque[tuple[int, Decimal]] = deque()
        self.volume = Decimal(0)

    def record(self, ts_ms: int, notional: Decimal) -> None:
        self._fills.append((ts_ms, notional))
        self.volume += notional

    def rates(self, now_ms: int) -> Tier:
        while self._fills and self._fills[0][0] < now_ms - WINDOW_MS:
            self.volume -= self._fills.popleft()[1]
        tier = self.tiers[0]
        for candidate in self.tiers:
            if self.volume >= candidate.min_volume:
                tier = candidate
        return tier

    def clear(self) -> None:
        self._fills.clear()
        self.volume = Decimal(0)
