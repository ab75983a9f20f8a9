"""One trade tape per pair, kept as one-minute candles: the single source of the 24 h
ticker figures, the OHLC/kline endpoints and the tradeview channel.

Every trade the simulator prints (the seeded history, the random walk's prints, the
user's own fills) goes through :meth:`Tape.add`, so volume, average, high/low and the
candles always agree with each other and with ``/api/v2/trades``. Pure logic: no I/O,
no clock of its own (callers pass times).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

MINUTE_S = 60
DAY_S = 86_400
RETAIN_MINUTES = 2 * 24 * 60  # two days of one-minute candles (2,880 per pair)


@dataclass
class Candle:
    start_s: int  # bucket start, Unix seconds (BTCTurk's graph API uses seconds)
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)  # base quantity
    notional: Decimal = Decimal(0)  # quote value (price x quantity)

    def add(self, price: Decimal, amount: Decimal) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += amount
        self.notional += price * amount

    def merged(self, other: Candle) -> Candle:
        """This candle followed by ``other`` (a later one)."""
        return Candle(self.start_s, self.open, max(self.high, other.high),
                      min(self.low, other.low), other.close, self.volume + other.volume,
                      self.notional + other.notional)


@dataclass(frozen=True)
class Stats:
    open: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    volume: Decimal
    average: Decimal  # volume-weighted


class Tape:
    def __init__(self, quantum: Decimal) -> None:
        self.quantum = quantum  # price decimals for the average
        self.minutes: deque[Candle] = deque()
        self._agg_key: tuple[int, int] | None = None
        self._agg: Candle | None = None
        # snapshot()'s rows of closed minutes (only the newest candle ever changes): the
        # market is saved every 30 s, and a day of minutes is ~1,440 rows a symbol.
        self._rows: dict[int, list[str | int]] = {}

    def add(self, price: Decimal, amount: Decimal, ts_ms: int) -> None:
        start = ts_ms // 1000 // MINUTE_S * MINUTE_S
        last = self.minutes[-1] if self.minutes else None
        if last is not None and start <= last.start_s:
            last.add(price, amount)  # late or same-minute trade: the open bucket takes it
            return
        candle = Candle(start, price, price, price, price)
        candle.add(price, amount)
        self.minutes.append(candle)
        while self.minutes and self.minutes[0].start_s < start - RETAIN_MINUTES * MINUTE_S:
            self.minutes.popleft()

    @property
    def last_price(self) -> Decimal | None:
        return self.minutes[-1].close if self.minutes else None

    def stats(self, now_ms: int) -> Stats | None:
        """Rolling 24 h figures as of ``now_ms`` (None before the first trade)."""
        if not self.minutes:
            return None
        now_s = now_ms // 1000
        window_start = now_s - DAY_S
        current = self.minutes[-1]
        # Completed candles are aggregated once per minute; the open one is added live.
        key = (window_start // MINUTE_S, current.start_s)
        if key != self._agg_key:
            agg: Candle | None = None
            for c in reversed(self.minutes):  # newest first, so merge onto the front
                if c.start_s < window_start:
                    break
                if c is not current:
                    agg = c if agg is None else c.merged(agg)
            self._agg_key, self._agg = key, agg
        total = current if self._agg is None else self._agg.merged(current)
        if current.start_s < window_start:  # nothing traded for a day: a flat day
            last = current.close
            return Stats(last, last, last, last, Decimal(0), last)
        average = (total.notional / total.volume).quantize(self.quantum) if total.volume \
            else total.close
        return Stats(total.open, total.high, total.low, total.close, total.volume, average)

    def candles(self, resolution_s: int, from_s: int | None = None,
                to_s: int | None = None) -> list[Candle]:
        """Candles of ``resolution_s`` (a multiple of 60) from the minute candles, oldest
        first, buckets aligned to UTC; empty buckets are left out, as on BTCTurk."""
        out: list[Candle] = []
        for c in self.minutes:
            if (from_s is not None and c.start_s < from_s) or (to_s is not None
                                                               and c.start_s > to_s):
                continue
            start = c.start_s // resolution_s * resolution_s
            if out and out[-1].start_s == start:
                out[-1] = out[-1].merged(c)
            else:
                out.append(Candle(start, c.open, c.high, c.low, c.close, c.volume, c.notional))
        return out

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> list[list[str | int]]:
        if not self.minutes:
            return []
        cache = self._rows
        newest = self.minutes[-1]
        rows = []
        for c in self.minutes:
            if c is newest:
                rows.append(_row(c))
                continue
            row = cache.get(c.start_s)
            if row is None:
                row = cache[c.start_s] = _row(c)
            rows.append(row)
        if len(cache) > len(self.minutes) + 64:  # minutes dropped off the front
            oldest = self.minutes[0].start_s
            self._rows = {k: v for k, v in cache.items() if k >= oldest}
        return rows

    def restore(self, rows: list[list[str | int]]) -> None:
        self.minutes.clear()
        self._rows = {}
        self._agg_key = None
        for start, o, h, lo, c, v, n in rows:
            self.minutes.append(Candle(int(start), Decimal(o), Decimal(h), Decimal(lo),
                                       Decimal(c), Decimal(v), Decimal(n)))


def _row(c: Candle) -> list[str | int]:
    return [c.start_s, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume),
            str(c.notional)]
