"""Simulated market: symbol specs, seeded random-walk order books and public trades.

The simulated book is the exchange's outside liquidity. It is regenerated around a
random-walking mid price every tick; user orders consume it (aggressive) or get filled
when the walk crosses them (resting). Money is Decimal throughout; the RNG's floats are
only turned into Decimal factors.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

from .ids import IdAllocator

DEPTH = 20
FIRST_TRADE_ID = 100_000_000_001


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
    min_price: Decimal = Decimal("0.0001")
    max_price: Decimal = Decimal("100000000")
    level_notional: Decimal = Decimal("40000")  # typical quote value per book level

    @property
    def price_quantum(self) -> Decimal:
        return Decimal(1).scaleb(-(self.denominator_scale if self.has_fraction else 0))

    @property
    def qty_quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.numerator_scale)


# Realistic shapes: BTCTRY has integer prices (hasFraction false, the staff-documented quirk).
DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCTRY", "BTC", "TRY", 8, 0, False, Decimal("3600000"), Decimal("10")),
    SymbolSpec("ETHTRY", "ETH", "TRY", 8, 2, True, Decimal("140000"), Decimal("1")),
    SymbolSpec("SOLTRY", "SOL", "TRY", 4, 2, True, Decimal("7500"), Decimal("0.1")),
    SymbolSpec("USDTTRY", "USDT", "TRY", 2, 2, True, Decimal("41.50"), Decimal("0.01")),
)


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
    open_price: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    low: Decimal = Decimal(0)
    volume: Decimal = Decimal(0)

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
        return self.trades[-1].price if self.trades else self.mid


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
            book = Book(spec=spec, mid=spec.start_price, open_price=spec.start_price)
            book.high = book.low = spec.start_price
            self.books[spec.name] = book

    def _rand(self, lo: float, hi: float) -> Decimal:
        return Decimal(str(round(self.rng.uniform(lo, hi), 6)))

    def regenerate(self, book: Book, now_ms: int) -> None:
        """Fresh DEPTH levels each side around ``book.mid`` (liquidity replenishes)."""
        spec = book.spec
        q = spec.price_quantum
        step = max(q, (book.mid * self.step).quantize(q, rounding=ROUND_UP))
        half = max(q, (book.mid * self.spread / 2).quantize(q, rounding=ROUND_UP))
        best_bid = (book.mid - half).quantize(q, rounding=ROUND_DOWN)
        best_ask = (book.mid + half).quantize(q, rounding=ROUND_UP)
        if best_ask <= best_bid:
            best_ask = best_bid + q
        bid_prices = [best_bid - i * step for i in range(DEPTH)]
        book.bids = [[p, self._level_amount(spec, p)] for p in bid_prices if p > 0]
        book.asks = [
            [best_ask + i * step, self._level_amount(spec, best_ask)] for i in range(DEPTH)
        ]
        book.touch(now_ms)

    def _level_amount(self, spec: SymbolSpec, price: Decimal) -> Decimal:
        notional = spec.level_notional * self._rand(0.2, 1.6)
        amount = (notional / price).quantize(spec.qty_quantum, rounding=ROUND_DOWN)
        return max(amount, spec.qty_quantum)

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
        book.high = max(book.high, price)
        book.low = min(book.low, price)
        book.volume += amount
        return trade

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
                    "open": str(b.open_price),
                    "high": str(b.high),
                    "low": str(b.low),
                    "volume": str(b.volume),
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
            book.open_price = Decimal(data["open"])
            book.high, book.low = Decimal(data["high"]), Decimal(data["low"])
            book.volume = Decimal(data["volume"])
            book.trades.clear()
            for tid, price, amount, side, ts in data["trades"]:
                book.trades.append(PublicTrade(tid, Decimal(price), Decimal(amount), side, ts))
            self.regenerate(book, now_ms)
