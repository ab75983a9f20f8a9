"""Simulated market: symbol specs, seeded history, random-walk order books, public trades.

The simulated book is the exchange's outside liquidity. It is regenerated around a
random-walking mid price every tick; user orders consume it (aggressive) or get filled
when the walk crosses them (resting). Money is Decimal throughout; the RNG's floats are
only turned into Decimal factors.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal
from functools import cached_property
from typing import Any

from .history import Tape
from .ids import IdAllocator

DEPTH = 20
HISTORY_MINUTES = 24 * 60
HISTORY_VOLATILITY = Decimal("0.0012")  # per minute: a calm day's path (about 4.5 %/day)
FIRST_TRADE_ID = 100_000_000_001
_MICRO = Decimal(1_000_000)


@dataclass(frozen=True)
class SymbolSpec:
    name: str
    numerator: str
    denominator: str
    numerator_scale: int
    denominator_scale: int
    has_fraction: bool
    start_price: Decimal
    tick_size: Decimal
    min_total: Decimal = Decimal("99.91")
    # PRICE_FILTER bounds as BTCTurk shows them for BTCTRY (btcturk-api.md 4.2).
    min_price: Decimal = Decimal("0.0000000000001")
    max_price: Decimal = Decimal("10000000")
    level_notional: Decimal = Decimal("40000")  # typical quote value per book level

    # Cached: the walk asks for them ~100 times per book per tick (frozen fields, so the
    # values never change; cached_property writes the instance dict, not a field).
    @cached_property
    def price_quantum(self) -> Decimal:
        return Decimal(1).scaleb(-(self.denominator_scale if self.has_fraction else 0))

    @cached_property
    def qty_quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.numerator_scale)

    @cached_property
    def grid(self) -> Decimal:
        """The price grid the simulated liquidity quotes on: the UI tick (BTCTurk does not
        enforce it on orders, but the book and the prints sit on it)."""
        return max(self.price_quantum, self.tick_size)


# Realistic shapes: BTCTRY has integer prices (hasFraction false, the staff-documented
# quirk) while its denominatorScale is 2, as BTCTurk reports it (a display format only).
DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCTRY", "BTC", "TRY", 8, 2, False, Decimal("3600000"), Decimal("10")),
    SymbolSpec("ETHTRY", "ETH", "TRY", 8, 2, True, Decimal("140000"), Decimal("1")),
    SymbolSpec("SOLTRY", "SOL", "TRY", 4, 2, True, Decimal("7500"), Decimal("0.1")),
    SymbolSpec("USDTTRY", "USDT", "TRY", 2, 2, True, Decimal("41.50"), Decimal("0.01")),
)


def on_grid(price: Decimal, grid: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """``price`` as a multiple of ``grid`` (quantize alone only sets decimals: 10 is 1e1)."""
    return ((price / grid).to_integral_value(rounding=rounding) * grid).quantize(
        grid if grid < 1 else Decimal(1))


def _micros(r: float) -> int:
    """``round(round(u, 6) * 1e6)`` for u = uniform(0.2, 1.6) from ``random() = r``: the
    factor in millionths. ``round(u, 6)`` rounds u's exact value half-even to 6 decimals
    (k / 10**6, and k is what the outer round gives back); ``u * 1e6`` is within 2.4e-10
    of u's exact value times 10**6, so rounding it gives the same k unless that value is
    within that of a half, which takes the slow formula itself."""
    u = 0.2 + (1.6 - 0.2) * r
    scaled = u * 1e6
    if abs(scaled - int(scaled) - 0.5) < 1e-6:
        return round(round(u, 6) * 1e6)
    return round(scaled)


@dataclass
class PublicTrade:
    trade_id: int
    price: Decimal
    amount: Decimal
    side: int  # 0 buy, 1 sell (WS "S")
    timestamp_ms: int


@dataclass
class Book:
    spec: SymbolSpec
    mid: Decimal
    bids: list[list[Decimal]] = field(default_factory=list)  # [price, amount], best first
    asks: list[list[Decimal]] = field(default_factory=list)
    change_set: int = 0
    timestamp_ms: int = 0
    trades: deque[PublicTrade] = field(default_factory=lambda: deque(maxlen=100))
    tape: Tape = field(init=False)

    def __post_init__(self) -> None:
        self.tape = Tape(self.spec.price_quantum)

    def best_bid(self) -> Decimal | None:
        return self.bids[0][0] if self.bids else None

    def best_ask(self) -> Decimal | None:
        return self.asks[0][0] if self.asks else None

    def touch(self, now_ms: int) -> None:
        """Record a change: new change set and timestamp (REST and WS expose both)."""
        self.change_set += 1
        self.timestamp_ms = now_ms

    def recompute_mid(self) -> None:
        bid, ask = self.best_bid(), self.best_ask()
        if bid is not None and ask is not None:
            self.mid = (bid + ask) / 2
        elif bid is not None or ask is not None:
            self.mid = bid if bid is not None else ask  # type: ignore[assignment]

    def last_price(self) -> Decimal:
        last = self.tape.last_price
        return last if last is not None else on_grid(self.mid, self.spec.grid)


class Market:
    """All books plus the seeded walk. Not thread-safe: one event loop owns it."""

    def __init__(
        self,
        symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS,
        seed: int = 1,
        volatility: Decimal = Decimal("0.0004"),
        spread_bps: Decimal = Decimal("6"),
        step_bps: Decimal = Decimal("2"),
    ) -> None:
        self.rng = random.Random(seed)
        self.volatility = volatility
        self.spread = spread_bps / Decimal(10000)
        self.step = step_bps / Decimal(10000)
        self.books: dict[str, Book] = {}
        self.trade_ids = IdAllocator("trade_id", FIRST_TRADE_ID)
        for spec in symbols:
            self.books[spec.name] = Book(spec=spec, mid=spec.start_price)

    def asset_precision(self, asset: str) -> int:
        """Decimals an asset is counted in: a base asset's quantity scale, a quote
        asset's price decimals (TRY 2), 8 for anything else."""
        for book in self.books.values():
            if book.spec.numerator == asset:
                return book.spec.numerator_scale
        for book in self.books.values():
            if book.spec.denominator == asset:
                return book.spec.denominator_scale
        return 8

    def _rand(self, lo: float, hi: float) -> Decimal:
        return Decimal(str(round(self.rng.uniform(lo, hi), 6)))

    def regenerate(self, book: Book, now_ms: int) -> None:
        """Fresh DEPTH levels each side around ``book.mid`` (liquidity replenishes).

        The hottest lines of a simulated run (40 levels per book per tick), so the level
        amounts (``_level_amount``'s formula) are computed inline: the random factor's
        micro-units from ``_micros``, the divisor once per level (every ask level is
        sized at the best ask, as first written). Values bit for bit the plain formula's
        (tests/test_sim_market.py)."""
        spec = book.spec
        q = spec.grid
        step = max(q, on_grid(book.mid * self.step, q, ROUND_UP))
        half = max(q, on_grid(book.mid * self.spread / 2, q, ROUND_UP))
        best_bid = on_grid(book.mid - half, q, ROUND_DOWN)
        best_ask = on_grid(book.mid + half, q, ROUND_UP)
        if best_ask <= best_bid:
            best_ask = best_bid + q
        rand = self.rng.random
        notional = spec.level_notional
        quantum = spec.qty_quantum
        bids = []
        for i in range(DEPTH):
            price = best_bid - i * step
            if price > 0:
                amount = (notional * Decimal(_micros(rand())) / (price * _MICRO)).quantize(
                    quantum, ROUND_DOWN)
                bids.append([price, amount if amount >= quantum else quantum])
        divisor = best_ask * _MICRO
        asks = []
        for i in range(DEPTH):
            amount = (notional * Decimal(_micros(rand())) / divisor).quantize(
                quantum, ROUND_DOWN)
            asks.append([best_ask + i * step, amount if amount >= quantum else quantum])
        book.bids = bids
        book.asks = asks
        book.touch(now_ms)

    def _level_amount(self, spec: SymbolSpec, price: Decimal) -> Decimal:
        """One level's amount: ``level_notional * uniform(0.2, 1.6) / price`` (the factor
        to 6 decimals), rounded down to the quantity quantum, at least one quantum.
        uniform(lo, hi) is lo + (hi - lo) * random(), and Decimal(str(round(u, 6))) is
        exactly micros / 10**6 (a float rounded to 6 decimals has that short decimal as
        its repr), and a Decimal quotient is the correctly rounded value of the same
        rational, so amounts are bit for bit what _rand gave (tests/test_sim_market.py)."""
        quantum = spec.qty_quantum
        amount = (spec.level_notional * Decimal(_micros(self.rng.random()))
                  / (price * _MICRO)).quantize(quantum, ROUND_DOWN)
        return amount if amount >= quantum else quantum

    def walk(self, book: Book, now_ms: int) -> PublicTrade | None:
        """One random-walk step; sometimes prints a public trade at the touch."""
        shock = Decimal(str(round(self.rng.gauss(0.0, 1.0), 6))) * self.volatility
        book.mid = max(book.spec.price_quantum, book.mid * (1 + shock))
        self.regenerate(book, now_ms)
        if self.rng.random() < 0.5:
            return self._public_trade(book, now_ms)
        return None

    def _public_trade(self, book: Book, now_ms: int) -> PublicTrade | None:
        side = 0 if self.rng.random() < 0.5 else 1
        level = book.asks[0] if side == 0 and book.asks else (book.bids[0] if book.bids else None)
        if level is None:
            return None
        amount = (level[1] * self._rand(0.01, 0.2)).quantize(
            book.spec.qty_quantum, rounding=ROUND_DOWN
        )
        if amount <= 0:
            return None
        return self.record_trade(book, level[0], amount, side, now_ms)

    def record_trade(
        self, book: Book, price: Decimal, amount: Decimal, side: int, now_ms: int
    ) -> PublicTrade:
        trade = PublicTrade(self.trade_ids(), price, amount, side, now_ms)
        book.trades.append(trade)
        book.tape.add(price, amount, now_ms)
        return trade

    def seed_history(self, now_ms: int, minutes: int = HISTORY_MINUTES) -> None:
        """A plausible, seeded past for every pair: ``minutes`` of trades ending at the
        start price, on the price grid, so a fresh market already has a coherent tape,
        24 h figures and candles (all derived from these same trades)."""
        for book in self.books.values():
            self._seed_book(book, now_ms, minutes)

    def _seed_book(self, book: Book, now_ms: int, minutes: int) -> None:
        spec, grid = book.spec, book.spec.grid
        # Walk backwards from the start price so the history ends where the market opens.
        path = [book.mid]
        for _ in range(minutes - 1):
            shock = Decimal(str(round(self.rng.gauss(0.0, 1.0), 6))) * HISTORY_VOLATILITY
            path.append(max(grid, path[-1] / (1 + shock)))
        path.reverse()
        # Minute-aligned, so one seed gives the same candles whenever it starts.
        start_ms = (now_ms // 60_000 - minutes) * 60_000
        for minute, price in enumerate(path):
            for k in range(1 + self.rng.randrange(3)):
                jitter = Decimal(str(round(self.rng.uniform(-1.0, 1.0), 6))) * self.spread
                at = on_grid(price * (1 + jitter), grid)
                if minute == minutes - 1 and k == 0:
                    at = on_grid(book.mid, grid)  # the last print is the opening price
                amount = (spec.level_notional * self._rand(0.005, 0.05) / at).quantize(
                    spec.qty_quantum, rounding=ROUND_DOWN)
                if at <= 0 or amount <= 0:
                    continue
                ts = start_ms + minute * 60_000 + k * 10_000 + self.rng.randrange(10_000)
                self.record_trade(book, at, amount, self.rng.randrange(2), ts)
        last = book.tape.last_price
        if last is not None:
            book.mid = last

    def set_book(
        self,
        symbol: str,
        bids: list[list[Decimal]],
        asks: list[list[Decimal]],
        now_ms: int,
    ) -> Book:
        book = self.books[symbol]
        book.bids = sorted(([p, a] for p, a in bids if a > 0), key=lambda lv: -lv[0])
        book.asks = sorted(([p, a] for p, a in asks if a > 0), key=lambda lv: lv[0])
        book.recompute_mid()
        book.touch(now_ms)
        return book

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """The walk's state (RNG, mids, 24 h figures, recent trades) as plain JSON data."""
        version, internal, gauss = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "books": {
                name: {
                    "mid": str(b.mid),
                    "tape": b.tape.snapshot(),
                    "trades": [
                        [t.trade_id, str(t.price), str(t.amount), t.side, t.timestamp_ms]
                        for t in b.trades
                    ],
                }
                for name, b in self.books.items()
            },
        }

    def restore_ids(self, next_ids: dict[str, int]) -> None:
        start = next_ids.get(self.trade_ids.name)
        if start is not None:
            self.trade_ids.next = self.trade_ids.ceiling = max(self.trade_ids.next, start)

    def restore(self, snap: dict[str, Any], now_ms: int) -> None:
        version, internal, gauss = snap["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        for name, data in snap.get("books", {}).items():
            book = self.books.get(name)
            if book is None:
                continue  # a symbol no longer listed
            book.mid = Decimal(data["mid"])
            book.tape.restore(data["tape"])
            book.trades.clear()
            for tid, price, amount, side, ts in data["trades"]:
                book.trades.append(PublicTrade(tid, Decimal(price), Decimal(amount), side, ts))
            self.regenerate(book, now_ms)
