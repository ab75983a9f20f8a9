"""The backtest's fill model (pure): how our limit orders fill against recorded books.

Written down, because every backtest figure depends on it. It is the exchange
simulator's model (exchange_sim/engine.py), applied to recorded books:

- **Marketable part** (at submission): a buy consumes the recorded ask levels priced at
  or below its limit, best first, each at the level's price and up to the level's shown
  quantity (a sell: bid levels at or above its limit). These fills pay the **taker** fee.
- **Resting part**: the rest waits. On every later book of the symbol, a resting buy
  fills **at its own limit price** against the ask levels priced at or below it (a sell:
  bids at or above it), up to their shown quantity, and pays the **maker** fee. Touching
  counts: an ask equal to our bid fills it.
- **Queue position is ignored**: we are assumed first in line at our price, so a book
  that crosses or touches our price fills us before anyone else. Recorded books do not
  contain our own orders, and a level's shown quantity is what a crossing could give us.
  This is optimistic for a passive order that was only touched; the consistency check
  against a paper session measures what it costs.
- Within one book, quantity taken by one of our orders is not available to the next
  (levels are consumed); the next book is a fresh snapshot.
- Fees: ``price × quantity × rate``, rounded up to 1e-8 of the quote currency (as the
  simulator does); in the quote currency for both sides.
- An order leaves after ``ttl_s`` of message clock (the executor cancels stale orders),
  when cancelled, or when filled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal

from bus.messages import BookSnapshot

FEE_QUANTUM = Decimal("1e-8")
ZERO = Decimal(0)


@dataclass
class SimOrder:
    cid: str
    intent_id: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    placed_ns: int
    expires_ns: int
    filled: Decimal = ZERO

    @property
    def left(self) -> Decimal:
        return self.quantity - self.filled


@dataclass(frozen=True, slots=True)
class SimFill:
    cid: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    maker: bool
    ts_ns: int


@dataclass
class Matcher:
    maker_fee: Decimal
    taker_fee: Decimal
    open: dict[str, SimOrder] = field(default_factory=dict)

    def fee(self, price: Decimal, qty: Decimal, maker: bool) -> Decimal:
        rate = self.maker_fee if maker else self.taker_fee
        return (price * qty * rate).quantize(FEE_QUANTUM, rounding=ROUND_UP)

    def submit(self, order: SimOrder, book: BookSnapshot | None, now_ns: int) -> list[SimFill]:
        fills: list[SimFill] = []
        if book is not None:
            levels = book.asks if order.side == "buy" else book.bids
            fills = self._take(order, _copy(levels), order.side, now_ns, maker=False,
                               at_own_price=False)
        if order.left > 0:
            self.open[order.cid] = order
        return fills

    def on_book(self, book: BookSnapshot, now_ns: int) -> list[SimFill]:
        """Resting orders of ``book.symbol`` this book crosses; buys best (highest)
        first, then sells best (lowest) first, each by age (the simulator's priority)."""
        mine = [o for o in self.open.values() if o.symbol == book.symbol]
        if not mine:
            return []
        fills: list[SimFill] = []
        asks, bids = _copy(book.asks), _copy(book.bids)
        for o in sorted((o for o in mine if o.side == "buy"), key=lambda o: (-o.price,
                                                                              o.placed_ns)):
            fills += self._take(o, asks, "buy", now_ns, maker=True, at_own_price=True)
        for o in sorted((o for o in mine if o.side == "sell"), key=lambda o: (o.price,
                                                                               o.placed_ns)):
            fills += self._take(o, bids, "sell", now_ns, maker=True, at_own_price=True)
        for o in mine:
            if o.left <= 0:
                self.open.pop(o.cid, None)
        return fills

    def expire(self, now_ns: int) -> list[SimOrder]:
        gone = [o for o in self.open.values() if now_ns >= o.expires_ns]
        for o in gone:
            del self.open[o.cid]
        return gone

    def cancel(self, cid: str) -> SimOrder | None:
        return self.open.pop(cid, None)

    def _take(self, order: SimOrder, levels: list[list[Decimal]], side: str, now_ns: int,
              *, maker: bool, at_own_price: bool) -> list[SimFill]:
        crosses: Callable[[Decimal], bool] = (
            (lambda p: p <= order.price) if side == "buy" else (lambda p: p >= order.price))
        fills = []
        while order.left > 0 and levels and crosses(levels[0][0]):
            qty = min(order.left, levels[0][1])
            price = order.price if at_own_price else levels[0][0]
            order.filled += qty
            fills.append(SimFill(order.cid, order.symbol, side, price, qty,
                                 self.fee(price, qty, maker), maker, now_ns))
            levels[0][1] -= qty
            if levels[0][1] <= 0:
                levels.pop(0)
        return fills


def _copy(levels: list[tuple[Decimal, Decimal]] | list[list[Decimal]]) -> list[list[Decimal]]:
    return [[p, q] for p, q in levels]
