"""The strategy plug-in API: what a strategy sees and what it may return.

A strategy is a class deriving from ``Strategy`` with a ``Params`` struct. The host (the
strategy actor live, the backtest offline) calls its hooks with a ``SymbolContext``: the
symbol's latest book, the position and balances as the executor reports them, our open
orders, and the *message clock* ``now_ns``. A hook returns actions: ``Place`` (a limit
order intent, which risk approves, resizes or rejects) or ``Cancel`` (one of our open
orders), each with a reason string.

Rules a plug-in must keep, because live trading, replay and the backtest depend on them:
- no I/O and no wall clock: ``ctx.now_ns`` is the only time; the same inputs must give
  the same actions (replay --verify compares decisions);
- decide from the context, not from hidden counters that a restart would lose: the host
  makes intent ids from the decision and the position, so a restarted strategy that
  decides the same thing on the same state produces the same id;
- an exception is contained by the host: it is logged with the input that caused it, the
  symbol is paused for this strategy (no more decisions for it until the actor restarts)
  and counted; the actor and the other symbols go on.

Hooks (only ``on_book`` is required; the others default to "no action"):
- ``on_book(ctx)``: a book update of ``ctx.symbol`` (throttled by the host,
  ``strategy.throttle_ms``, with a trailing evaluation so the last book of a burst counts);
- ``on_trade(ctx, price, quantity, side)``: a public trade on the exchange's tape (anyone's;
  ``side`` is the taker's, "buy" or "sell"), from marketdata's ``md.trade.<SYM>``: live
  WebSocket trades only (not the join snapshot's history; none while marketdata is on its
  REST fallback). Behind the same gates as ``on_book`` but not throttled; ``ctx`` is the
  latest book's. Recordings carry the trades, so replay and the backtest call it too;
- ``on_fill(ctx, fill)``: a fill of one of our orders (ctx.position may not include it yet:
  the host refreshes the position from the executor before the next ``on_book``);
- ``on_tick(ctx)``: a clock tick for a symbol with a book, every ``strategy.tick_s`` of
  message clock (0 = off), so a strategy can act on time passing without a new book.

Parameters: ``Params`` is a frozen msgspec Struct with defaults. Its fields are set from
the ``[strategy]`` config table (every key the host does not use itself), validated on
start; an unknown key or a wrong type exits 2 naming ``strategy.<field>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Literal

import msgspec

from bus.messages import BookSnapshot, Fill, Position, SymbolRules

INTERFACE_VERSION = 1
Side = Literal["buy", "sell"]


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every strategy's parameters (no fields of its own). Check values that
    msgspec cannot (ranges of Decimals) in ``__post_init__`` and raise ValueError: the
    loader reports it as a config error naming the strategy."""


@dataclass(frozen=True, slots=True)
class OpenOrderView:
    client_order_id: str
    side: str
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal


@dataclass(frozen=True, slots=True)
class SymbolContext:
    symbol: str
    now_ns: int  # message clock: the envelope time of the triggering message
    book: BookSnapshot
    position: Position | None  # as the executor reports it (None: never traded)
    free_quote: Decimal  # free balance of the quote asset (TRY)
    free_base: Decimal  # free balance of the base asset
    open_orders: tuple[OpenOrderView, ...]  # ours, not yet terminal
    pending: bool  # an intent of ours awaits risk's answer for this symbol
    rules: SymbolRules | None

    @property
    def bid(self) -> Decimal:
        return self.book.bids[0][0]

    @property
    def ask(self) -> Decimal:
        return self.book.asks[0][0]

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    @property
    def quantity(self) -> Decimal:
        return self.position.quantity if self.position is not None else Decimal(0)


@dataclass(frozen=True, slots=True)
class Place:
    """A limit order intent. ``key`` distinguishes decisions that are otherwise equal
    on the same position (e.g. a grid level); leave it empty when side and reason
    already say it."""

    side: Side
    price: Decimal
    quantity: Decimal
    reason: str
    ttl_s: float = 120.0
    key: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    client_order_id: str
    reason: str


Action = Place | Cancel


class Strategy:
    """Base class of a strategy plug-in. Subclasses set ``name`` and ``Params`` and
    implement ``on_book``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    interface_version: ClassVar[int] = INTERFACE_VERSION

    def __init__(self, params: Params) -> None:
        self.params = params

    @property
    def unthrottled(self) -> bool:
        """True: the host calls ``on_book`` on every book, without throttle or reject
        backoff (benchmarks)."""
        return False

    def order_sizes(self) -> dict[str, Decimal]:
        """The order values (quote currency) the parameters ask for, by parameter name:
        preflight checks them against the exchange's minimum order total and the
        balance. Override when the strategy has such parameters."""
        return {}

    def on_book(self, ctx: SymbolContext) -> Sequence[Action]:
        raise NotImplementedError

    def on_trade(self, ctx: SymbolContext, price: Decimal, quantity: Decimal,
                 side: str) -> Sequence[Action]:
        return ()

    def on_fill(self, ctx: SymbolContext, fill: Fill) -> Sequence[Action]:
        return ()

    def on_tick(self, ctx: SymbolContext) -> Sequence[Action]:
        return ()
