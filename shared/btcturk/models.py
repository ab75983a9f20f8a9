"""Typed BTCTurk responses.

Two layers: private ``_W*`` structs mirror the wire JSON exactly (camelCase, strict types,
unknown keys ignored), public structs are what callers use (snake_case, Decimal money,
int milliseconds). msgspec decodes JSON numbers and strings straight into Decimal, so no
price or amount ever passes through a float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

import msgspec

Side = Literal["buy", "sell"]
Method = Literal["limit", "market"]
OrderStatus = str  # "Untouched" | "Partial" | "Canceled" | "Closed" (kept open: never crash)

T = TypeVar("T")


# --------------------------------------------------------------------------- public models


class Level(msgspec.Struct, array_like=True, frozen=True):
    """One book level. array_like: the REST wire form is ``["price", "amount"]``."""

    price: Decimal
    amount: Decimal


class OrderBook(msgspec.Struct, frozen=True):
    timestamp_ms: int
    bids: list[Level]  # best (highest) first
    asks: list[Level]  # best (lowest) first


class SymbolInfo(msgspec.Struct, frozen=True):
    name: str
    name_normalized: str
    numerator: str
    denominator: str
    numerator_scale: int
    denominator_scale: int
    has_fraction: bool
    tick_size: Decimal | None
    min_price: Decimal | None
    max_price: Decimal | None
    min_total: Decimal | None  # PRICE_FILTER.minExchangeValue, in quote currency
    status: str

    @property
    def price_scale(self) -> int:
        # Staff answer: without hasFraction the price must be an integer; denominatorScale is
        # then only a display format.
        return self.denominator_scale if self.has_fraction else 0

    @property
    def price_quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.price_scale)

    @property
    def qty_quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.numerator_scale)


class ExchangeInfo(msgspec.Struct, frozen=True):
    server_time_ms: int
    symbols: list[SymbolInfo]

    def symbol(self, name: str) -> SymbolInfo:
        """Look up by ``BTCTRY`` or ``BTC_TRY``; KeyError if unknown."""
        wanted = name.replace("_", "").upper()
        for sym in self.symbols:
            if sym.name.upper() == wanted:
                return sym
        raise KeyError(name)


class Ticker(msgspec.Struct, frozen=True):
    pair: str
    timestamp_ms: int
    last: Decimal | None
    high: Decimal | None
    low: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    open: Decimal | None
    volume: Decimal | None
    average: Decimal | None
    daily: Decimal | None
    daily_percent: Decimal | None


class Balance(msgspec.Struct, frozen=True):
    asset: str
    balance: Decimal
    free: Decimal
    locked: Decimal


class SubmittedOrder(msgspec.Struct, frozen=True):
    id: int
    client_order_id: str | None
    pair: str
    side: str
    method: str
    price: Decimal  # "0" for market orders
    quantity: Decimal  # quote amount for a market BUY
    datetime_ms: int


class ExchangeOrder(msgspec.Struct, frozen=True):
    id: int
    client_order_id: str | None
    pair: str
    side: str
    method: str
    price: Decimal
    amount: Decimal
    left_amount: Decimal
    status: OrderStatus
    time_ms: int  # can be 0 in openOrders; fall back to update_time_ms
    update_time_ms: int

    @property
    def filled(self) -> Decimal:
        return self.amount - self.left_amount


class UserTrade(msgspec.Struct, frozen=True):
    """One fill (REST users/transactions/trade item, identical to WS 423)."""

    id: int
    order_id: int
    client_order_id: str | None
    pair: str
    numerator: str
    denominator: str
    side: str
    price: Decimal
    amount: Decimal  # abs(); the wire amount is negative for sells
    fee: Decimal  # abs(); the wire fee is negative
    tax: Decimal  # abs()
    timestamp_ms: int


# --------------------------------------------------------------------------- wire models


class Envelope(msgspec.Struct, Generic[T]):
    success: bool = False
    message: str | None = None
    code: int | str | None = None
    data: T | None = None


class ErrorBody(msgspec.Struct):
    success: bool | None = None
    message: str | None = None
    code: int | str | None = None


class ServerTime(msgspec.Struct):
    serverTime: Decimal


class _WFilter(msgspec.Struct):
    filterType: str = ""
    minPrice: Decimal | None = None
    maxPrice: Decimal | None = None
    tickSize: Decimal | None = None
    minExchangeValue: Decimal | None = None


class _WSymbol(msgspec.Struct):
    name: str
    numerator: str
    denominator: str
    numeratorScale: int
    denominatorScale: int
    nameNormalized: str = ""
    status: str = ""
    hasFraction: bool = True
    filters: list[_WFilter] = []


class _WExchangeInfo(msgspec.Struct):
    symbols: list[_WSymbol]
    serverTime: Decimal | None = None  # Decimal also accepts the string form


class _WTicker(msgspec.Struct):
    pair: str
    timestamp: Decimal = Decimal(0)
    last: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    open: Decimal | None = None
    volume: Decimal | None = None
    average: Decimal | None = None
    daily: Decimal | None = None
    dailyPercent: Decimal | None = None


class _WOrderBook(msgspec.Struct):
    timestamp: Decimal
    bids: list[Level]
    asks: list[Level]


class _WBalance(msgspec.Struct):
    asset: str
    balance: Decimal
    free: Decimal
    locked: Decimal


class _WSubmitted(msgspec.Struct):
    id: int
    type: str
    method: str
    pairSymbol: str
    datetime: Decimal
    quantity: Decimal = Decimal(0)
    price: Decimal | None = None
    newOrderClientId: str | None = None


class _WOrder(msgspec.Struct):
    id: int
    pairSymbol: str
    type: str
    method: str
    status: str
    price: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    leftAmount: Decimal = Decimal(0)
    orderClientId: str | None = None
    time: Decimal = Decimal(0)
    updateTime: Decimal = Decimal(0)


class _WOpenOrders(msgspec.Struct):
    asks: list[_WOrder] = []
    bids: list[_WOrder] = []


class _WUserTrade(msgspec.Struct):
    id: int
    orderId: int
    price: Decimal
    amount: Decimal
    numeratorSymbol: str
    denominatorSymbol: str
    orderType: str
    timestamp: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    orderClientId: str | None = None


# --------------------------------------------------------------------------- converters


def _ms(value: Decimal | None) -> int:
    """Timestamps arrive as ints, floats (``1613315997466.0``) or strings."""
    if value is None or value == "":
        return 0
    return int(Decimal(value))


def symbol_from_wire(w: _WSymbol) -> SymbolInfo:
    pf = next((f for f in w.filters if f.filterType == "PRICE_FILTER"), _WFilter())
    return SymbolInfo(
        name=w.name,
        name_normalized=w.nameNormalized or f"{w.numerator}_{w.denominator}",
        numerator=w.numerator,
        denominator=w.denominator,
        numerator_scale=w.numeratorScale,
        denominator_scale=w.denominatorScale,
        has_fraction=w.hasFraction,
        tick_size=pf.tickSize,
        min_price=pf.minPrice,
        max_price=pf.maxPrice,
        min_total=pf.minExchangeValue,
        status=w.status,
    )


def exchange_info_from_wire(w: _WExchangeInfo) -> ExchangeInfo:
    return ExchangeInfo(
        server_time_ms=_ms(w.serverTime), symbols=[symbol_from_wire(s) for s in w.symbols]
    )


def ticker_from_wire(w: _WTicker) -> Ticker:
    return Ticker(
        pair=w.pair,
        timestamp_ms=_ms(w.timestamp),
        last=w.last,
        high=w.high,
        low=w.low,
        bid=w.bid,
        ask=w.ask,
        open=w.open,
        volume=w.volume,
        average=w.average,
        daily=w.daily,
        daily_percent=w.dailyPercent,
    )


def order_book_from_wire(w: _WOrderBook) -> OrderBook:
    return OrderBook(timestamp_ms=_ms(w.timestamp), bids=w.bids, asks=w.asks)


def balance_from_wire(w: _WBalance) -> Balance:
    return Balance(asset=w.asset, balance=w.balance, free=w.free, locked=w.locked)


def submitted_from_wire(w: _WSubmitted) -> SubmittedOrder:
    return SubmittedOrder(
        id=w.id,
        client_order_id=w.newOrderClientId,
        pair=w.pairSymbol,
        side=w.type.lower(),
        method=w.method.lower(),
        price=w.price if w.price is not None else Decimal(0),
        quantity=w.quantity,
        datetime_ms=_ms(w.datetime),
    )


def order_from_wire(w: _WOrder) -> ExchangeOrder:
    return ExchangeOrder(
        id=w.id,
        client_order_id=w.orderClientId,
        pair=w.pairSymbol,
        side=w.type.lower(),
        method=w.method.lower(),
        price=w.price,
        amount=w.amount,
        left_amount=w.leftAmount,
        status=w.status,
        time_ms=_ms(w.time),
        update_time_ms=_ms(w.updateTime),
    )


def user_trade_from_wire(w: _WUserTrade) -> UserTrade:
    return UserTrade(
        id=w.id,
        order_id=w.orderId,
        client_order_id=w.orderClientId,
        pair=f"{w.numeratorSymbol}{w.denominatorSymbol}",
        numerator=w.numeratorSymbol,
        denominator=w.denominatorSymbol,
        side=w.orderType.lower(),
        price=abs(w.price),
        amount=abs(w.amount),
        fee=abs(w.fee),
        tax=abs(w.tax),
        timestamp_ms=_ms(w.timestamp),
    )


def to_builtins(obj: Any) -> Any:
    """Plain JSON-able form (Decimals as strings), handy for logs and the bus."""
    return msgspec.to_builtins(obj)
