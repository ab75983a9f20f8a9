"""Matching engine and account of the simulated exchange (a single user account).

- Validation runs in the order of the reference (section 11) and raises ``SimReject``
  with BTCTurk's message and code.
- Aggressive orders take liquidity from the simulated book level by level (taker fee, at
  the level price). The rest of a limit order rests; market orders never rest.
- Resting orders are filled in price-time priority when the book crosses them (maker fee,
  at the order price), at most the crossing liquidity each time: partial fills happen.
- Fees are charged in the quote currency and reported negative, as BTCTurk does.
- Balances move with every fill; open orders lock funds (free/locked).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation
from typing import Any

from .fees import DEFAULT_MAKER, DEFAULT_TAKER, FeeSchedule, Tier
from .ids import IdAllocator, Reserve
from .market import Book, Market, SymbolSpec

FEE_QUANTUM = Decimal("1e-8")
MARKET_BAND = Decimal("0.05")  # market orders fill at most 5 % away from the touch
METHOD_BY_INT = {0: "limit", 1: "market", 2: "stoplimit", 3: "stopmarket"}
SIDE_BY_INT = {0: "buy", 1: "sell"}
METHOD_CODE = {"limit": 0, "market": 1, "stoplimit": 2, "stopmarket": 3}
STOP_METHODS = ("stoplimit", "stopmarket")
# A stop's child order once triggered (ISS#616: a new order, same client id, new id).
STOP_CHILD = {"stoplimit": "limit", "stopmarket": "market"}
ASSET_NAMES = {"TRY": "Türk Lirası", "BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana",
               "USDT": "Tether"}
LIMIT_BAND = Decimal(10)  # limit prices within [last / 10, last x 10] (ORDER_MIN/MAX_PRICE)
FIRST_ORDER_ID = 9_000_000_001
FIRST_FILL_ID = 1_100_000_000_000_000_001


class SimReject(Exception):
    def __init__(self, message: str, code: int, http_status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status


@dataclass
class SimOrder:
    id: int
    client_id: str
    symbol: str
    side: str
    method: str
    price: Decimal  # 0 for market orders
    amount: Decimal  # base qty; quote amount for a market buy
    left: Decimal
    time_ms: int
    update_ms: int
    locked: Decimal  # funds still reserved for this order (quote for buys, base for sells)
    status: str = "Untouched"
    stop_price: Decimal = Decimal(0)  # stoplimit / stopmarket only

    @property
    def is_stop(self) -> bool:
        return self.method in STOP_METHODS

    @property
    def is_open(self) -> bool:
        return self.status in ("Untouched", "Partial")


@dataclass
class Fill:
    id: int
    order_id: int
    client_id: str
    symbol: str
    numerator: str
    denominator: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    timestamp_ms: int
    maker: bool


@dataclass
class OrderRequest:
    pair: str
    side: str
    method: str
    price: Decimal | None
    quantity: Decimal | None
    client_id: str
    stop_price: Decimal | None = None


@dataclass
class Account:
    free: dict[str, Decimal] = field(default_factory=dict)
    locked: dict[str, Decimal] = field(default_factory=dict)

    def lock(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, Decimal(0)) - amount
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        self.lock(asset, -amount)

    def spend_locked(self, asset: str, amount: Decimal) -> None:
        self.locked[asset] = self.locked.get(asset, Decimal(0)) - amount

    def credit(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, Decimal(0)) + amount


def fmt(value: Decimal) -> str:
    """Plain positional notation (never ``0E-8``), as BTCTurk prints amounts."""
    return format(value, "f")


def decimals_of(value: Decimal) -> int:
    """Decimals that matter: trailing zeros are allowed (``1.50`` has 1)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def to_decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SimReject("FAILED_ORDER_PARAMETER", 1000)
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise SimReject("FAILED_ORDER_PARAMETER", 1000) from exc
    if not result.is_finite():
        raise SimReject("FAILED_ORDER_PARAMETER", 1000)
    return result


Emit = Callable[[int, dict[str, Any]], None]
@dataclass
class Changes:
    """What changed since the state store last saved (only tracked when persisting)."""

    orders: dict[int, SimOrder] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    forgotten: set[int] = field(default_factory=set)  # order ids lost by ``forget``

    def __bool__(self) -> bool:
        return bool(self.orders or self.fills or self.forgotten)


class Engine:
    def __init__(
        self,
        market: Market,
        balances: dict[str, Decimal],
        *,
        now_ms: Callable[[], int],
        taker_fee: Decimal = DEFAULT_TAKER,
        maker_fee: Decimal = DEFAULT_MAKER,
        fee_tiers: tuple[Tier, ...] | None = None,
        user_id: int = 424242,
    ) -> None:
        self.market = market
        self.now_ms = now_ms
        self.fees = FeeSchedule(fee_tiers or (Tier(Decimal(0), maker_fee, taker_fee),))
        self.user_id = user_id
        self.initial_balances = dict(balances)
        self.emit_private: Emit = lambda _t, _b: None
        self.emit_trade: Callable[[str, Any], None] = lambda _s, _t: None
        # None unless a state store persists the account (see track_changes).
        self.changes: Changes | None = None
        self._order_ids = IdAllocator("order_id", FIRST_ORDER_ID)
        self._fill_ids = IdAllocator("fill_id", FIRST_FILL_ID)
        self.reset()

    def reset(self, balances: dict[str, Decimal] | None = None) -> None:
        """A fresh account. Id counters go on: an id is never reused, not even after reset."""
        if balances is not None:
            self.initial_balances = dict(balances)
        self.account = Account(free=dict(self.initial_balances))
        for book in self.market.books.values():
            for asset in (book.spec.numerator, book.spec.denominator):
                self.account.free.setdefault(asset, Decimal(0))
        self.orders: dict[int, SimOrder] = {}
        self.open_orders: dict[str, list[SimOrder]] = {s: [] for s in self.market.books}
        self.stops: dict[str, list[SimOrder]] = {s: [] for s in self.market.books}
        self.fills: list[Fill] = []
        self.fees.clear()
        if self.changes is not None:
            self.changes = Changes()

    def track_changes(self, on_reserve: Reserve) -> None:
        """Persisting mode: record changed orders and new fills, reserve ids durably."""
        self.changes = Changes()
        self._order_ids.on_reserve = on_reserve
        self._fill_ids.on_reserve = on_reserve

    def take_changes(self) -> Changes:
        taken = self.changes or Changes()
        if self.changes is not None:
            self.changes = Changes()
        return taken

    def restore(
        self,
        account: Account,
        orders: list[SimOrder],
        fills: list[Fill],
        next_ids: dict[str, int],
    ) -> None:
        """Continue a persisted account (balances, every order, every fill, id counters)."""
        self.account = account
        self.orders = {o.id: o for o in sorted(orders, key=lambda o: o.id)}
        self.open_orders = {s: [] for s in self.market.books}
        self.stops = {s: [] for s in self.market.books}
        for order in self.orders.values():
            if order.is_open and order.symbol in self.open_orders:
                (self.stops if order.is_stop else self.open_orders)[order.symbol].append(order)
        self.fills = sorted(fills, key=lambda f: f.id)
        self.fees.clear()
        for fill in self.fills:
            self.fees.record(fill.timestamp_ms, fill.price * fill.amount)
        for alloc in (self._order_ids, self._fill_ids):
            start = next_ids.get(alloc.name)
            if start is not None:
                alloc.next = alloc.ceiling = max(alloc.next, start)

    def id_ceilings(self) -> dict[str, int]:
        return {a.name: a.ceiling for a in (self._order_ids, self._fill_ids)}

    def _changed(self, order: SimOrder) -> None:
        if self.changes is not None:
            self.changes.orders[order.id] = order

    # ------------------------------------------------------------------ validation

    def parse_request(self, fields: dict[str, Any]) -> OrderRequest:
        """Fields are matched case-insensitively (ASP.NET binding); enums may be ints."""
        low = {k.lower(): v for k, v in fields.items()}
        pair = str(low.get("pairsymbol") or "").replace("_", "").upper()
        side = self._enum(low.get("ordertype"), SIDE_BY_INT)
        method = self._enum(low.get("ordermethod"), METHOD_BY_INT)
        # BTCTurk fills in a GUID when the client sends no id (DOCS, SWG).
        client_id = str(low.get("neworderclientid") or "") or str(uuid.uuid4())
        return OrderRequest(
            pair=pair,
            side=side,
            method=method,
            price=to_decimal(low.get("price")),
            quantity=to_decimal(low.get("quantity")),
            client_id=client_id[:50],
            stop_price=to_decimal(low.get("stopprice")),
        )

    @staticmethod
    def _enum(value: Any, by_int: dict[int, str]) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return by_int.get(value, str(value))
        return str(value or "").lower()

    def validate(self, req: OrderRequest) -> tuple[Book, Decimal, str]:
        """Checks in the reference's order; returns (book, amount to lock, lock asset)."""
        book = self.market.books.get(req.pair)
        if book is None:
            raise SimReject("FAILED_ORDER_PARAMETER", 1000)
        spec = book.spec
        if req.method not in ("limit", "market", *STOP_METHODS):
            raise SimReject("ORDER_METHOD_NOT_SUPPORTED", 1134)
        if req.side not in ("buy", "sell"):
            raise SimReject("ORDER_TYPE_NOT_SUPPORTED", 1193)
        if req.quantity is None or req.quantity <= 0:
            raise SimReject("FAILED_ORDER_PARAMETER", 1000)
        price_scale = spec.denominator_scale if spec.has_fraction else 0
        if req.method in ("limit", "stoplimit"):
            if req.price is None or req.price <= 0:
                raise SimReject("FAILED_LIMIT_ORDER", 1120)
            if decimals_of(req.price) > price_scale:
                raise SimReject("FAILED_INVALID_PRICE_SCALE", 1126)
        if req.method in STOP_METHODS:
            self._validate_stop(req, book, price_scale)
        market_buy = req.method in ("market", "stopmarket") and req.side == "buy"
        qty_scale = spec.denominator_scale if market_buy else spec.numerator_scale
        if decimals_of(req.quantity) > qty_scale:
            raise SimReject("FAILED_INVALID_QUANTITY_SCALE", 1127)
        total = self._order_total(req, book)
        if total < spec.min_total:
            raise SimReject("FAILED_MIN_TOTAL_AMOUNT", 1123)
        if req.method in ("limit", "stoplimit"):
            assert req.price is not None
            low, high = limit_bounds(book)
            if req.price > high:
                raise SimReject("PRICE_MUST_BE_LESS_THAN_MAXPRICE", 1226)
            if req.price < low:
                raise SimReject("PRICE_MUST_BE_LESS_THAN_MINPRICE", 1227)
        lock_amount, lock_asset = self._lock_for(req, spec)
        if self.account.free.get(lock_asset, Decimal(0)) < lock_amount:
            raise SimReject("FAILED_ORDER_WITH_OPEN_ORDERS", 1122)
        return book, lock_amount, lock_asset

    @staticmethod
    def _validate_stop(req: OrderRequest, book: Book, price_scale: int) -> None:
        """A stop must not trigger at once: a buy stop above the best ask, a sell stop
        below the best bid (how we read codes 1124/1125: the names state the rule)."""
        stop = req.stop_price
        if stop is None or stop <= 0:
            raise SimReject("FAILED_ORDER_PARAMETER", 1000)
        if decimals_of(stop) > price_scale:
            raise SimReject("FAILED_INVALID_STOP_PRICE_SCALE", 1128)
        ask, bid = book.best_ask(), book.best_bid()
        if req.side == "buy" and ask is not None and stop <= ask:
            raise SimReject("FAILED_STOP_PRICE_GREATER_THAN_BEST_ASK", 1124)
        if req.side == "sell" and bid is not None and stop >= bid:
            raise SimReject("FAILED_STOP_PRICE_LESS_THAN_BEST_BID", 1125)

    @staticmethod
    def _order_total(req: OrderRequest, book: Book) -> Decimal:
        assert req.quantity is not None
        if req.method in ("limit", "stoplimit"):
            assert req.price is not None
            return req.price * req.quantity
        if req.side == "buy":
            return req.quantity  # market buy quantity is already the quote amount
        if req.method == "stopmarket":
            assert req.stop_price is not None
            return req.stop_price * req.quantity  # valued where it will trigger
        bid = book.best_bid()
        if bid is None:
            raise SimReject("FAILED_MARKET_ORDER", 1118)
        return bid * req.quantity

    def _lock_for(self, req: OrderRequest, spec: SymbolSpec) -> tuple[Decimal, str]:
        assert req.quantity is not None
        if req.side == "sell":
            return req.quantity, spec.numerator
        if req.method in ("market", "stopmarket"):
            return req.quantity, spec.denominator
        assert req.price is not None
        # Reserve at the taker rate so no fill can ever cost more than what is locked.
        reserve = req.price * req.quantity * (1 + self.fees.max_taker)
        return reserve.quantize(FEE_QUANTUM, rounding=ROUND_UP), spec.denominator

    # ------------------------------------------------------------------ orders

    def submit(self, req: OrderRequest) -> SimOrder:
        book, lock_amount, lock_asset = self.validate(req)
        if req.method == "market" and not (book.asks if req.side == "buy" else book.bids):
            raise SimReject("FAILED_MARKET_ORDER", 1118)
        assert req.quantity is not None
        now = self.now_ms()
        order = SimOrder(
            id=self._order_ids(),
            client_id=req.client_id,
            symbol=req.pair,
            side=req.side,
            method=req.method,
            price=req.price if req.method in ("limit", "stoplimit") and req.price is not None
            else Decimal(0),
            amount=req.quantity,
            left=req.quantity,
            time_ms=now,
            update_ms=now,
            locked=lock_amount,
            stop_price=req.stop_price if req.method in STOP_METHODS and req.stop_price
            else Decimal(0),
        )
        self.account.lock(lock_asset, lock_amount)
        self.orders[order.id] = order
        self._changed(order)
        self.emit_private(451, self._order_event(order, 451))
        if order.is_stop:
            self.stops[order.symbol].append(order)  # waits for its trigger
        elif req.method == "market":
            self._fill_market(order, book)
        else:
            self._take_limit(order, book)
            if order.is_open:
                self.open_orders[order.symbol].append(order)
        return order

    def cancel(self, order_id: int) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise SimReject("NO_ORDER_MATCHES_YOUR_REQUEST", 1052)
        if order.status == "Canceled":
            return order  # cancelling twice is a success since 2024-12
        if not order.is_open:
            raise SimReject("ORDER_COULD_NOT_BE_CANCELED", 1050)
        order.status = "Canceled"
        self._finish(order)
        self._changed(order)
        self.emit_private(452, self._order_event(order, 452))
        return order

    def forget(self, client_id: str) -> SimOrder:
        """Test fault: the exchange loses an open order without a trace (no event, no
        history), its reserved funds released, as a venue that lost state would."""
        order = next((o for o in self.orders.values() if o.client_id == client_id), None)
        if order is None or not order.is_open:
            raise SimReject("NO_ORDER_MATCHES_YOUR_REQUEST", 1052)
        self._finish(order)
        del self.orders[order.id]
        if self.changes is not None:
            # Lost for good: a restart from the state file must not bring it back.
            self.changes.orders.pop(order.id, None)
            self.changes.forgotten.add(order.id)
        return order

    def _finish(self, order: SimOrder) -> None:
        """Leave the book: give back whatever is still reserved."""
        spec = self.market.books[order.symbol].spec
        asset = spec.denominator if order.side == "buy" else spec.numerator
        if order.locked:
            self.account.unlock(asset, order.locked)
            order.locked = Decimal(0)
        order.update_ms = self.now_ms()
        for waiting in (self.open_orders.get(order.symbol, []), self.stops.get(order.symbol, [])):
            if order in waiting:
                waiting.remove(order)

    # ------------------------------------------------------------------ matching

    def _take_limit(self, order: SimOrder, book: Book) -> None:
        """Aggressive part of a limit order: consume levels at or better than its price."""
        levels = book.asks if order.side == "buy" else book.bids
        crosses = (
            (lambda p: p <= order.price) if order.side == "buy" else (lambda p: p >= order.price)
        )
        changed = False
        while order.left > 0 and levels and crosses(levels[0][0]):
            qty = min(order.left, levels[0][1])
            self._apply_fill(order, levels[0][0], qty, maker=False)
            self._consume(levels, qty)
            changed = True
        if changed:
            book.touch(self.now_ms())

    def _fill_market(self, order: SimOrder, book: Book) -> None:
        spec = book.spec
        levels = book.asks if order.side == "buy" else book.bids
        touch = levels[0][0]
        limit = touch * (1 + MARKET_BAND) if order.side == "buy" else touch * (1 - MARKET_BAND)
        while levels and order.left > 0:
            price = levels[0][0]
            if (order.side == "buy" and price > limit) or (order.side == "sell" and price < limit):
                break
            if order.side == "buy":
                affordable = order.left / (price * (1 + self.fees.rates(self.now_ms()).taker))
                qty = min(levels[0][1], affordable.quantize(spec.qty_quantum, ROUND_DOWN))
            else:
                qty = min(levels[0][1], order.left)
            if qty <= 0:
                break
            self._apply_fill(order, price, qty, maker=False)
            self._consume(levels, qty)
        book.touch(self.now_ms())
        # Market orders never rest: dust that cannot buy one quantum is given back.
        filled = order.left < order.amount
        order.status = "Closed" if filled else "Canceled"
        if filled:
            order.left = Decimal(0)
        self._finish(order)
        if not filled:
            self.emit_private(452, self._order_event(order, 452))

    @staticmethod
    def _consume(levels: list[list[Decimal]], qty: Decimal) -> None:
        levels[0][1] -= qty
        if levels[0][1] <= 0:
            levels.pop(0)

    def match_resting(self, symbol: str) -> int:
        """Fill resting orders the book now crosses (price-time priority). Returns fills."""
        book = self.market.books[symbol]
        if self.stops.get(symbol):
            self.trigger_stops(symbol)
        resting = self.open_orders.get(symbol, [])
        if not resting:
            return 0
        fills = 0
        buys = sorted((o for o in resting if o.side == "buy"), key=lambda o: (-o.price, o.id))
        sells = sorted((o for o in resting if o.side == "sell"), key=lambda o: (o.price, o.id))
        for order in buys:
            fills += self._maker_fill(order, book.asks, lambda p, o=order: p <= o.price)
        for order in sells:
            fills += self._maker_fill(order, book.bids, lambda p, o=order: p >= o.price)
        if fills:
            book.touch(self.now_ms())
        return fills

    def trigger_stops(self, symbol: str) -> list[SimOrder]:
        """Stops whose price the last trade reached: each becomes Canceled and a new limit
        or market order takes its place, same client id, new id (ISS#616). Returns the
        children (a child that fails validation is dropped; its stop stays Canceled)."""
        book = self.market.books[symbol]
        last = book.tape.last_price
        if last is None:
            return []
        fired = [
            o for o in self.stops[symbol]
            if (o.side == "buy" and last >= o.stop_price)
            or (o.side == "sell" and last <= o.stop_price)
        ]
        children = []
        for stop in sorted(fired, key=lambda o: o.id):  # time priority among stops
            stop.status = "Canceled"
            self._finish(stop)
            self._changed(stop)
            self.emit_private(452, self._order_event(stop, 452))
            child = OrderRequest(symbol, stop.side, STOP_CHILD[stop.method],
                                 stop.price if stop.method == "stoplimit" else None,
                                 stop.amount, stop.client_id)
            try:
                children.append(self.submit(child))
            except SimReject:
                continue
        return children

    def open_orders_of(self, symbol: str | None) -> list[SimOrder]:
        """Resting orders and untriggered stops (both are open orders on BTCTurk)."""
        return [
            o
            for book in (self.open_orders, self.stops)
            for sym, waiting in book.items()
            if symbol is None or sym == symbol
            for o in waiting
        ]

    def _maker_fill(
        self, order: SimOrder, levels: list[list[Decimal]], crosses: Callable[[Decimal], bool]
    ) -> int:
        fills = 0
        while order.is_open and order.left > 0 and levels and crosses(levels[0][0]):
            qty = min(order.left, levels[0][1])
            self._apply_fill(order, order.price, qty, maker=True)
            self._consume(levels, qty)
            fills += 1
        return fills

    def _apply_fill(self, order: SimOrder, price: Decimal, qty: Decimal, maker: bool) -> None:
        book = self.market.books[order.symbol]
        spec = book.spec
        now = self.now_ms()
        notional = price * qty
        tier = self.fees.rates(now)
        fee = (notional * (tier.maker if maker else tier.taker)).quantize(
            FEE_QUANTUM, rounding=ROUND_UP
        )
        if order.side == "buy":
            self.account.spend_locked(spec.denominator, notional + fee)
            order.locked -= notional + fee
            self.account.credit(spec.numerator, qty)
            # A market buy's "left" is the unspent quote amount.
            order.left -= notional + fee if order.method == "market" else qty
        else:
            self.account.spend_locked(spec.numerator, qty)
            order.locked -= qty
            self.account.credit(spec.denominator, notional - fee)
            order.left -= qty
        order.left = max(order.left, Decimal(0))
        order.update_ms = now
        fill = Fill(
            id=self._fill_ids(),
            order_id=order.id,
            client_id=order.client_id,
            symbol=order.symbol,
            numerator=spec.numerator,
            denominator=spec.denominator,
            side=order.side,
            price=price,
            amount=qty,
            fee=fee,
            timestamp_ms=now,
            maker=maker,
        )
        self.fills.append(fill)
        self.fees.record(now, notional)
        self._changed(order)
        if self.changes is not None:
            self.changes.fills.append(fill)
        if order.method == "limit":
            order.status = "Closed" if order.left == 0 else "Partial"
            if order.left == 0:
                self._finish(order)
        trade = self.market.record_trade(book, price, qty, 0 if order.side == "buy" else 1, now)
        self.emit_private(441, self._match_event(order, fill))
        self.emit_private(423, self.fill_json(fill))
        # BalanceUpdated: clients refresh balances over REST when it arrives (WSPDF).
        self.emit_private(201, {"type": 201, "userId": self.user_id,
                                "payload": f"{spec.numerator},{spec.denominator}"})
        self.emit_trade(order.symbol, trade)

    # ------------------------------------------------------------------ JSON views

    def order_json(self, order: SimOrder) -> dict[str, Any]:
        spec = self.market.books[order.symbol].spec
        return {
            "id": order.id,
            "price": fmt(order.price),
            "amount": fmt(order.amount),
            "quantity": fmt(order.amount),
            "stopPrice": fmt(order.stop_price),
            "pairSymbol": order.symbol,
            "pairSymbolNormalized": f"{spec.numerator}_{spec.denominator}",
            "type": order.side,
            "method": order.method,
            "orderClientId": order.client_id,
            "time": order.time_ms,
            "updateTime": order.update_ms,
            "status": order.status,
            "leftAmount": fmt(order.left),
        }

    def submit_json(self, order: SimOrder) -> dict[str, Any]:
        spec = self.market.books[order.symbol].spec
        return {
            "id": order.id,
            "quantity": fmt(order.amount),
            "price": fmt(order.price),
            "stopPrice": fmt(order.stop_price),
            "newOrderClientId": order.client_id,
            "type": order.side,
            "method": order.method,
            "pairSymbol": order.symbol,
            "pairSymbolNormalized": f"{spec.numerator}_{spec.denominator}",
            "datetime": order.time_ms,
        }

    @staticmethod
    def fill_json(fill: Fill) -> dict[str, Any]:
        sign = Decimal(-1) if fill.side == "sell" else Decimal(1)
        return {
            "id": fill.id,
            "orderId": fill.order_id,
            "orderClientId": fill.client_id,
            "timestamp": fill.timestamp_ms,
            "price": fmt(fill.price),
            "amount": fmt(sign * fill.amount),
            "fee": fmt(-fill.fee),
            "tax": "0",
            "numeratorSymbol": fill.numerator,
            "denominatorSymbol": fill.denominator,
            "orderType": fill.side,
        }

    def pair_id(self, symbol: str) -> int:
        """The pair's id everywhere (exchangeinfo ``id``, ticker ``PId``, WS ``pairId``)."""
        return list(self.market.books).index(symbol) + 1

    def _order_event(self, order: SimOrder, msg_type: int) -> dict[str, Any]:
        left = order.left if order.method in ("limit", "stoplimit") else Decimal(0)
        return {
            "type": msg_type,
            "pairId": self.pair_id(order.symbol),
            "symbol": order.symbol,
            "id": order.id,
            "method": METHOD_CODE.get(order.method, 0),
            "userId": self.user_id,
            "orderType": 0 if order.side == "buy" else 1,
            "price": f"{order.price:.16f}",
            "amount": f"{order.amount:.16f}",
            "numLeft": f"{left:.16f}",
            "denomLeft": f"{left * order.price:.16f}",
            "newOrderClientId": order.client_id,
        }

    def _match_event(self, order: SimOrder, fill: Fill) -> dict[str, Any]:
        return {
            "type": 441,
            "id": order.id,
            "user": self.user_id,
            "isBid": order.side == "buy",
            "method": METHOD_CODE.get(order.method, 0),
            "pair": self.pair_id(order.symbol),
            "symbol": order.symbol,
            "amount": f"{fill.amount:.10f}",
            "price": f"{fill.price:.10f}",
            "clientId": order.client_id,
        }

    def balances_json(self) -> list[dict[str, Any]]:
        out = []
        for asset in sorted(set(self.account.free) | set(self.account.locked)):
            free = self.account.free.get(asset, Decimal(0))
            locked = self.account.locked.get(asset, Decimal(0))
            out.append(
                {
                    "asset": asset,
                    "assetname": ASSET_NAMES.get(asset, asset),
                    "balance": fmt(free + locked),
                    "locked": fmt(locked),
                    "free": fmt(free),
                    "orderFund": "0",
                    "requestFund": "0",
                    "precision": self.market.asset_precision(asset),
                    "timestamp": self.now_ms(),
                }
            )
        return out


def limit_bounds(book: Book) -> tuple[Decimal, Decimal]:
    """Limit prices BTCTurk accepts now: the static PRICE_FILTER bounds, narrowed to
    [last / 10, last x 10] (ORDER_MIN_PRICE_EXCEEDED: "less than 1/10 of current price")."""
    spec = book.spec
    last = book.last_price()
    low = max(spec.min_price, (last / LIMIT_BAND).quantize(spec.price_quantum, ROUND_UP))
    high = min(spec.max_price, last * LIMIT_BAND)
    return low, high
