"""The trading day: when daily figures (risk's daily loss) start again.

A day begins at ``hour``:00 local time in ``tz`` (default: midnight in
Europe/Istanbul, BTCTurk's home time), so the boundary follows that zone's offset and
any change of it. Pure: the time is passed in (nanoseconds since the epoch, a message
clock), never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "Europe/Istanbul"
NS = 1_000_000_000


class BadTimeZone(ValueError):
    pass


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadTimeZone(f"unknown time zone {name!r}") from exc


@dataclass(frozen=True)
class TradingDay:
    tz: ZoneInfo = ZoneInfo(DEFAULT_TZ)
    hour: int = 0  # local hour the day starts at, 0..23

    def __post_init__(self) -> None:
        if not 0 <= self.hour <= 23:
            raise ValueError(f"day boundary hour must be 0..23 (got {self.hour})")

    def day(self, wall_ns: int) -> int:
        """The trading day ``wall_ns`` falls in, as a proleptic ordinal (comparable,
        consecutive days differ by 1). Whole seconds: the boundary is on one."""
        local = datetime.fromtimestamp(wall_ns // NS, self.tz)
        return (local - timedelta(hours=self.hour)).date().toordinal()

    @classmethod
    def named(cls, tz: str = DEFAULT_TZ, hour: int = 0) -> TradingDay:
        return cls(zone(tz), hour)
