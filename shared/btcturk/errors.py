"""Error taxonomy of the BTCTurk client.

The executor decides what to do with an order from the *class* of the error alone:

- ``RejectedError``: the exchange definitely refused the request (validation, funds,
  unknown order, authentication). Nothing was created; do not retry unchanged.
- ``RetryableError``: the request provably never took effect (connection refused, DNS,
  connect timeout, HTTP 429). Safe to retry, after ``retry_after_s`` if set.
- ``AmbiguousError``: the request may have reached the exchange (read timeout, reset after
  sending, 5xx on a write, unreadable answer to a write). The order may exist: probe
  open/all orders by client order id before doing anything else.
- ``BadResponseError``: a read returned a body we could not understand.

No raw aiohttp/json/msgspec exception ever leaves a public client method.
"""

from __future__ import annotations


class BtcTurkError(Exception):
    """Base class. ``kind`` is a short machine-readable reason (e.g. ``"min_total"``)."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(f"{kind}: {message} (http={http_status}, code={code})")
        self.kind = kind
        self.message = message
        self.http_status = http_status
        self.code = code


class RejectedError(BtcTurkError):
    """Definite refusal by the exchange; the request had no effect."""


class RetryableError(BtcTurkError):
    """The request did not take effect; retrying is safe."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(kind, message, http_status=http_status, code=code)
        self.retry_after_s = retry_after_s


class AmbiguousError(BtcTurkError):
    """The request may or may not have taken effect on the exchange."""


class BadResponseError(BtcTurkError):
    """A (read) response was malformed or did not match the expected schema."""


# Exchange error messages mapped to a stable ``kind`` the executor can switch on.
_KIND_BY_MESSAGE: dict[str, str] = {
    "FAILED_MIN_TOTAL_AMOUNT": "min_total",
    "MIN_TOTAL": "min_total",
    "FAILED_ORDER_WITH_OPEN_ORDERS": "insufficient_balance",
    "BALANCE_NOT_ENOUGH": "insufficient_balance",
    "BALANCE_NOT_ENOUGH_WITHOUT_OPEN_ORDERS": "insufficient_balance",
    "FAILED_INVALID_PRICE_SCALE": "price_scale",
    "FAILED_INVALID_QUANTITY_SCALE": "quantity_scale",
    "FAILED_INVALID_STOP_PRICE_SCALE": "price_scale",
    "PRICE_MUST_BE_LESS_THAN_MAXPRICE": "price_bounds",
    "PRICE_MUST_BE_LESS_THAN_MINPRICE": "price_bounds",
    "ORDER_MIN_PRICE_EXCEEDED": "price_bounds",
    "ORDER_MAX_PRICE_EXCEEDED": "price_bounds",
    "NO_ORDER_MATCHES_YOUR_REQUEST": "order_not_found",
    "ORDER NOT FOUND": "order_not_found",
    "ORDER_COULD_NOT_BE_CANCELED": "cannot_cancel",
    "ORDER_METHOD_NOT_SUPPORTED": "validation",
    "ORDER_TYPE_NOT_SUPPORTED": "validation",
    "FAILED_LIMIT_ORDER": "validation",
    "FAILED_MARKET_ORDER": "validation",
    "FAILED_ORDER_PARAMETER": "validation",
}


def kind_for_message(message: str | None, http_status: int) -> str:
    """Stable reason for a rejection; 401 is always ``auth`` whatever the text says."""
    if http_status == 401:
        return "auth"
    if message:
        upper = message.strip().upper()
        if upper in _KIND_BY_MESSAGE:
            return _KIND_BY_MESSAGE[upper]
        if upper.startswith("UNAUTHORIZED"):
            return "auth"
    if http_status == 404:
        return "not_found"
    return "rejected"
