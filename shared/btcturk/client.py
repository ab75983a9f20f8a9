"""Async REST client for BTCTurk (public v2 + private v1 API-key endpoints).

Guarantees callers rely on:
- every public method raises only ``BtcTurkError`` subclasses (see errors.py);
- reads are retried a bounded number of times with backoff; writes (submit, cancel) are
  never retried here, because only the executor can decide if a retry is safe;
- every call has a timeout and goes through a client-side token bucket per endpoint group.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Container, Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec

from .auth import StampClock, auth_headers
from .errors import (
    AmbiguousError,
    BadResponseError,
    BtcTurkError,
    RejectedError,
    RetryableError,
    kind_for_message,
)
from .http import (
    ConnectError,
    ExchangeTimeout,
    HttpPool,
    HttpResponse,
    HttpTransport,
    ResponseLost,
)
from .models import (
    Balance,
    Envelope,
    ErrorBody,
    ExchangeInfo,
    ExchangeOrder,
    OrderBook,
    ServerTime,
    SubmittedOrder,
    Ticker,
    UserTrade,
    _WBalance,
    _WExchangeInfo,
    _WOpenOrders,
    _WOrder,
    _WOrderBook,
    _WSubmitted,
    _WTicker,
    _WUserTrade,
    balance_from_wire,
    exchange_info_from_wire,
    order_book_from_wire,
    order_from_wire,
    submitted_from_wire,
    ticker_from_wire,
    user_trade_from_wire,
)
from .ratejournal import RateJournal
from .ratelimit import RATE_LIMITS, RateLimiter

T = TypeVar("T")

# Building a typed decoder is costly; one per response type, shared by all clients.
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}

def _dec(value: Decimal) -> str:
    """Plain decimal string; BTCTurk's pattern ``^\\d{0,12}(\\.\\d{1,16})?$`` has no exponent."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after")  # HttpResponse names are lower-case
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class BtcTurkClient:
    """REST client. Use ``async with BtcTurkClient(...) as c`` or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        read_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        retry_after_cap_s: float = 10.0,
        rate_limits: dict[str, list[tuple[int, float]]] | None | Literal[False] = None,
        http: HttpTransport | None = None,
        rate_journal: Path | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``http``: another transport under the same client (the deterministic
        simulation's in-process exchange); real keep-alive sockets otherwise.
        ``rate_journal``: a file that keeps this account's recent sends across restarts
        (ratejournal.py), read with ``wall`` (the injected clock's wall seconds)."""
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.api_secret = api_secret
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.clock = StampClock()
        # Every HTTP answer by status code (429s included), for heartbeats and metrics.
        self.http_statuses: Counter[int] = Counter()
        self._pool: HttpTransport | None = http
        self._read_attempts = max(1, read_attempts)
        self._backoff_s = retry_backoff_s
        self._retry_after_cap_s = retry_after_cap_s
        # rate_limits=False disables client-side limiting (benchmarks against the simulator).
        limits = {} if rate_limits is False else (rate_limits or RATE_LIMITS)
        journal = (RateJournal(rate_journal, f"{self.base_url}|{api_key or ''}", limits)
                   if rate_journal is not None and limits else None)
        self._limiter = RateLimiter(limits, journal=journal, wall=wall)

    @property
    def rate_limited(self) -> int:
        """HTTP 429 answers received (the exchange's rate limits): a normal session has 0."""
        return self.http_statuses[429]

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> BtcTurkClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def rate_waits(self) -> int:
        """Requests that waited for room in a rate window (or for a 429's Retry-After)."""
        return self._limiter.waits

    async def close(self) -> None:
        self._limiter.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _http(self) -> HttpTransport:
        if self._pool is None:
            try:
                self._pool = HttpPool(self.base_url, connect_timeout_s=self.connect_timeout_s)
            except ValueError as exc:
                raise RejectedError("invalid_request", str(exc)) from exc
        return self._pool

    # ------------------------------------------------------------------ transport

    async def _send_once(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: bytes | None,
        private: bool,
    ) -> HttpResponse:
        """One HTTP exchange, translating every transport failure into our taxonomy."""
        pool = self._http()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if private:
            assert self.api_key is not None and self.api_secret is not None
            headers.update(auth_headers(self.api_key, self.api_secret, self.clock.next_stamp()))
        try:
            resp = await pool.request(method, path, params=params, headers=headers, body=body,
                                      timeout_s=self.timeout_s)
        except ConnectError as exc:
            # Refused, unreachable, or no connection in time: the request never left.
            raise RetryableError("connect_failed", str(exc)) from exc
        except ExchangeTimeout as exc:
            raise AmbiguousError("timeout", f"no complete answer within {self.timeout_s}s") from exc
        except (ResponseLost, OSError) as exc:
            # Reset, disconnect or garbage after the request may have been written.
            raise AmbiguousError("connection_lost", f"{type(exc).__name__}: {exc}") from exc
        return resp

    def _raise_for_status(self, status: int, raw: bytes, headers: Mapping[str, str],
                          write: bool) -> None:
        if 200 <= status < 300:
            return
        if status == 429:
            raise RetryableError(
                "rate_limited",
                self._error_text(raw) or "TOO_MANY_REQUESTS",
                http_status=status,
                code=429,
                retry_after_s=_retry_after(headers),
            )
        if status >= 500:
            cls = AmbiguousError if write else RetryableError
            raise cls("server_error", self._error_text(raw) or "server error", http_status=status)
        message, code = self._error_fields(raw)
        raise RejectedError(
            kind_for_message(message, status),
            message or f"HTTP {status}",
            http_status=status,
            code=code,
        )

    @staticmethod
    def _error_fields(raw: bytes) -> tuple[str | None, int | None]:
        try:
            err = msgspec.json.decode(raw, type=ErrorBody)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None, None
        code: int | None
        try:
            code = int(err.code) if err.code is not None else None
        except ValueError:
            code = None
        return err.message, code

    @classmethod
    def _error_text(cls, raw: bytes) -> str | None:
        return cls._error_fields(raw)[0]

    def _decode(self, raw: bytes, type_: Any, write: bool, what: str) -> Any:
        decoder = _DECODERS.get(type_)
        if decoder is None:
            decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
        try:
            return decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            cls = AmbiguousError if write else BadResponseError
            raise cls("bad_response", f"{what}: {exc}; body={raw[:200]!r}") from exc

    def _unwrap(
        self, raw: bytes, data_type: Any, write: bool, what: str, allow_none: bool = False
    ) -> Any:
        """Decode the ``{success, message, code, data}`` envelope and return ``data``."""
        env = self._decode(raw, Envelope[data_type], write, what)  # type: ignore[valid-type]
        if not env.success:
            code = env.code if isinstance(env.code, int) else None
            raise RejectedError(
                kind_for_message(env.message, 200), env.message or "success=false", code=code
            )
        if env.data is None and not allow_none:
            cls = AmbiguousError if write else BadResponseError
            raise cls("bad_response", f"{what}: success without data")
        return env.data

    async def _call(
        self,
        method: str,
        path: str,
        *,
        group: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        private: bool = False,
        write: bool = False,
    ) -> bytes:
        """Rate-limited call; reads are retried, writes are sent exactly once."""
        if private and (not self.api_key or not self.api_secret):
            raise RejectedError("auth", "API key and secret are required for private calls")
        attempts = 1 if write else self._read_attempts
        for attempt in range(attempts):
            await self._limiter.acquire(group)
            try:
                resp = await self._send_once(method, path, params, body, private)
                self.http_statuses[resp.status] += 1
                self._raise_for_status(resp.status, resp.body, resp.headers, write)
                return resp.body
            except (RetryableError, AmbiguousError) as exc:
                if exc.kind == "rate_limited":
                    # The exchange's window for this group is spent: hold all of the
                    # group back until its Retry-After, not only this request.
                    self._limiter.block(group, getattr(exc, "retry_after_s", None))
                if write or attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(self._retry_delay(exc, attempt))
        raise AssertionError("unreachable")

    def _retry_delay(self, exc: BtcTurkError, attempt: int) -> float:
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            if retry_after > self._retry_after_cap_s:
                raise exc  # waiting that long inside a call would hide the problem
            return retry_after
        return self._backoff_s * (2**attempt) * (0.5 + random.random())

    # ------------------------------------------------------------------ public endpoints

    async def server_time(self) -> int:
        raw = await self._call("GET", "/api/v2/server/time", group="time")
        return int(self._decode(raw, ServerTime, False, "server time").serverTime)

    async def sync_time(self) -> int:
        """Measure the server clock offset (ms) and use it for every later X-Stamp."""
        before = time.time() * 1000
        server = await self.server_time()
        after = time.time() * 1000
        self.clock.offset_ms = int(server - (before + after) / 2)
        return self.clock.offset_ms

    async def exchange_info(self) -> ExchangeInfo:
        raw = await self._call("GET", "/api/v2/server/exchangeinfo", group="exchangeinfo")
        return exchange_info_from_wire(self._unwrap(raw, _WExchangeInfo, False, "exchangeinfo"))

    async def ticker(self, pair: str | None = None) -> list[Ticker]:
        params = {"pairSymbol": pair} if pair else None
        raw = await self._call("GET", "/api/v2/ticker", group="ticker", params=params)
        return [ticker_from_wire(t) for t in self._unwrap(raw, list[_WTicker], False, "ticker")]

    async def order_book(self, pair: str, limit: int = 25) -> OrderBook:
        params = {"pairSymbol": pair, "limit": str(limit)}
        raw = await self._call("GET", "/api/v2/orderbook", group="orderbook", params=params)
        return order_book_from_wire(self._unwrap(raw, _WOrderBook, False, "orderbook"))

    # ------------------------------------------------------------------ private endpoints

    async def balances(self) -> list[Balance]:
        raw = await self._call("GET", "/api/v1/users/balances", group="balances", private=True)
        items = self._unwrap(raw, list[_WBalance], False, "balances")
        return [balance_from_wire(b) for b in items]

    async def submit_order(
        self,
        pair: str,
        side: Literal["buy", "sell"],
        method: Literal["limit", "market"],
        quantity: Decimal,
        price: Decimal | None,
        client_order_id: str,
    ) -> SubmittedOrder:
        """POST /api/v1/order once. For a market BUY ``quantity`` is in quote currency."""
        body = self._order_body(pair, side, method, quantity, price, client_order_id)
        raw = await self._call(
            "POST", "/api/v1/order", group="order_submit", body=body, private=True, write=True
        )
        # A success without data raises AmbiguousError: the order may well exist.
        return submitted_from_wire(self._unwrap(raw, _WSubmitted, True, "submit"))

    @staticmethod
    def _order_body(
        pair: str,
        side: str,
        method: str,
        quantity: Decimal,
        price: Decimal | None,
        client_order_id: str,
    ) -> bytes:
        # Local checks raise before anything is sent, so they are definite rejections.
        if side not in ("buy", "sell"):
            raise RejectedError("invalid_request", f"bad side {side!r}")
        if method not in ("limit", "market"):
            raise RejectedError("invalid_request", f"bad method {method!r}")
        if not isinstance(quantity, Decimal) or quantity <= 0:
            raise RejectedError("invalid_request", "quantity must be a positive Decimal")
        if method == "limit" and (not isinstance(price, Decimal) or price <= 0):
            raise RejectedError("invalid_request", "limit order needs a positive Decimal price")
        if len(client_order_id) > 50:
            raise RejectedError("invalid_request", "newOrderClientId longer than 50")
        payload: dict[str, str] = {
            "quantity": _dec(quantity),
            "newOrderClientId": client_order_id,
            "orderMethod": method,
            "orderType": side,
            "pairSymbol": pair,
        }
        if method == "limit" and price is not None:
            payload["price"] = _dec(price)
        return msgspec.json.encode(payload)

    async def cancel_order(self, order_id: int) -> None:
        """DELETE /api/v1/order?id= once. Success only acknowledges; WS 452 confirms."""
        raw = await self._call(
            "DELETE",
            "/api/v1/order",
            group="order_cancel",
            params={"id": str(int(order_id))},
            private=True,
            write=True,
        )
        self._unwrap(raw, Any, True, "cancel", allow_none=True)

    async def open_orders(self, pair: str | None = None) -> list[ExchangeOrder]:
        params = {"pairSymbol": pair} if pair else None
        raw = await self._call(
            "GET", "/api/v1/openOrders", group="open_orders", params=params, private=True
        )
        data = self._unwrap(raw, _WOpenOrders, False, "openOrders")
        return [order_from_wire(o) for o in [*data.asks, *data.bids]]

    async def all_orders(
        self,
        pair: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[ExchangeOrder]:
        params = {"pairSymbol": pair, "limit": str(limit)}
        if start_ms is not None:
            params["startTime"] = str(start_ms)
        if end_ms is not None:
            params["endTime"] = str(end_ms)
        raw = await self._call(
            "GET", "/api/v1/allOrders", group="all_orders", params=params, private=True
        )
        return [order_from_wire(o) for o in self._unwrap(raw, list[_WOrder], False, "allOrders")]

    async def get_order(self, order_id: int) -> ExchangeOrder:
        raw = await self._call(
            "GET", f"/api/v1/order/{int(order_id)}", group="order_get", private=True
        )
        return order_from_wire(self._unwrap(raw, _WOrder, False, "order"))

    async def user_trades(
        self,
        pair: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        skip_ids: Container[int] = (),
    ) -> list[UserTrade]:
        """The account's trades; ``skip_ids`` (trades the caller holds) are left out
        before conversion."""
        params: dict[str, str] = {}
        if pair:
            params["pairSymbol"] = pair
        if start_ms is not None:
            params["startDate"] = str(start_ms)
        if end_ms is not None:
            params["endDate"] = str(end_ms)
        raw = await self._call(
            "GET",
            "/api/v1/users/transactions/trade",
            group="user_trades",
            params=params or None,
            private=True,
        )
        items = self._unwrap(raw, list[_WUserTrade], False, "user trades")
        return [user_trade_from_wire(t) for t in items if t.id not in skip_ids]
