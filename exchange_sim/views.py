"""JSON views of the simulated market (symbols, tickers) shared by REST and WebSocket."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .engine import limit_bounds
from .history import Stats
from .market import Book


def _plain(value: Decimal) -> str:
    """A decimal as BTCTurk writes it: positional, never an exponent ("1E-13" is not a
    price string a client's decimal pattern accepts)."""
    return format(value, "f")


def symbol_json(index: int, book: Book) -> dict[str, Any]:
    s = book.spec
    low, high = limit_bounds(book)
    return {
        "id": index + 1,
        "name": s.name,
        "nameNormalized": f"{s.numerator}_{s.denominator}",
        "status": "TRADING",
        "numerator": s.numerator,
        "denominator": s.denominator,
        "numeratorScale": s.numerator_scale,
        "denominatorScale": s.denominator_scale,
        "hasFraction": s.has_fraction,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _plain(s.min_price),
                "maxPrice": _plain(s.max_price),
                "tickSize": _plain(s.tick_size),
                "minExchangeValue": _plain(s.min_total),
                "minAmount": None,
                "maxAmount": None,
            }
        ],
        "orderMethods": ["MARKET", "LIMIT", "STOP_MARKET", "STOP_LIMIT"],  # all four are modelled
        "displayFormat": "#,###",
        "commissionFromNumerator": False,
        "order": index + 1,
        "priceRounding": False,
        "isNew": False,
        "marketPriceWarningThresholdPercentage": "0.25",
        "maximumOrderAmount": None,
        "maximumLimitOrderPrice": _plain(high),
        "minimumLimitOrderPrice": _plain(low),
    }


def ticker_row(index: int, book: Book, now_ms: int) -> dict[str, Any]:
    """24 h figures from the pair's trade tape (history.py): all from the same trades."""
    s = book.spec
    stats = book.tape.stats(now_ms)
    if stats is None:  # no trade ever: a flat day at the mid
        mid = book.mid.quantize(s.grid)
        stats = Stats(mid, mid, mid, mid, Decimal(0), mid)
    daily = stats.last - stats.open
    pct = (daily / stats.open * 100).quantize(Decimal("0.01")) if stats.open else Decimal(0)
    return {
        "pair": s.name,
        "pairNormalized": f"{s.numerator}_{s.denominator}",
        "timestamp": book.timestamp_ms,
        "last": stats.last,
        "high": stats.high,
        "low": stats.low,
        "bid": book.best_bid() or Decimal(0),
        "ask": book.best_ask() or Decimal(0),
        "open": stats.open,
        "volume": stats.volume,
        "average": stats.average,
        "daily": daily,
        "dailyPercent": pct,
        "denominatorSymbol": s.denominator,
        "numeratorSymbol": s.numerator,
        "order": index + 1,
    }
