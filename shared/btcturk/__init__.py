"""BTCTurk adapter: REST client, WebSocket feed, signing, models and exchange rules."""

from .client import BtcTurkClient
from .errors import (
    AmbiguousError,
    BadResponseError,
    BtcTurkError,
    RejectedError,
    RetryableError,
)
from .models import (
    Balance,
    ExchangeInfo,
    ExchangeOrder,
    Level,
    OrderBook,
    SubmittedOrder,
    SymbolInfo,
    Ticker,
    UserTrade,
)

__all__ = [
    "AmbiguousError",
    "BadResponseError",
    "Balance",
    "BtcTurkClient",
    "BtcTurkError",
    "ExchangeInfo",
    "ExchangeOrder",
    "Level",
    "OrderBook",
    "RejectedError",
    "RetryableError",
    "SubmittedOrder",
    "SymbolInfo",
    "Ticker",
    "UserTrade",
]
