"""JSON views of the simulated market (symbols, tickers) shared by REST and WebSocket."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .market import Book


def symbol_json(index: int, book: Book) -> dict[str, Any]:
    s = book.spec
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
                "minPrice": str(s.min_price),
                "maxPrice": str(s.max_price),
                "tickSize": str(s.tick_size),
                "minExchangeValue": str(s.min_total),
                "minAmount": None,
                "maxAmount": None,
            }
        ],
        "orderMethods": ["MARKET", "LIMIT"],
        "displayFormat": "#,###",
        "commissionFromNumerator": False,
        "order": index + 1,
        "priceRounding": False,
        "isNew": False,
        "marketPriceWarningThresholdPercentage": "0.25",
        "maximumOrderAmount": None,
        "maximumLimitOrderPrice": str(s.max_price),
        "minimumLimitOrderPrice": str(s.min_price),
    }


def ticker_row(index: int, book: Book) -> dict[str, Any]:
    s = book.spec
    last = book.last_price()
    daily = last - book.open_price
    pct = (daily / book.open_price * 100).quantize(Decimal("0.01")) if book.open_price else 0
    return {
        "pair": s.name,
        "pairNormalized": f"{s.numerator}_{s.denominator}",
        "timestamp": book.timestamp_ms,
        "last": last,
        "high": book.high,
        "low": book.low,
        "bid": book.best_bid() or Decimal(0),
        "ask": book.best_ask() or Decimal(0),
        "open": book.open_price,
        "volume": book.volume,
        "average": book.mid.quantize(s.price_quantum),
        "daily": daily,
        "dailyPercent": pct,
        "denominatorSymbol": s.denominator,
        "numeratorSymbol": s.numerator,
        "order": index + 1,
    }
