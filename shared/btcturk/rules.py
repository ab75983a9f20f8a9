"""Exchange rules: make a (side, price, quantity) acceptable to BTCTurk, or say why not.

Rounding policy (always toward the trader's safe side, never toward more risk):
- limit BUY price rounds DOWN (never pay more than intended),
- limit SELL price rounds UP (never sell cheaper than intended),
- quantity always rounds DOWN (never exceed the intended size or the available balance).
After rounding, an order whose total (price x quantity) is below ``minExchangeValue`` is
rejected; we never round the quantity up to reach the minimum.

Price decimals: ``denominatorScale`` if ``hasFraction`` else 0 (integer prices).
Quantity decimals: ``numeratorScale``. ``tickSize`` is not enforced by the exchange (it is a
UI arrow step), so it is deliberately ignored here.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Literal

import msgspec

from .models import SymbolInfo


class RuleViolation(Exception):
    """The order cannot be made valid; ``reason`` is a stable code for risk/decision logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PreparedOrder(msgspec.Struct, frozen=True):
    side: str
    price: Decimal
    quantity: Decimal

    @property
    def total(self) -> Decimal:
        return self.price * self.quantity


def round_price(price: Decimal, side: Literal["buy", "sell"], symbol: SymbolInfo) -> Decimal:
    """Round to the allowed price decimals: BUY down, SELL up."""
    rounding = ROUND_DOWN if side == "buy" else ROUND_UP
    return price.quantize(symbol.price_quantum, rounding=rounding)


def round_quantity(quantity: Decimal, symbol: SymbolInfo) -> Decimal:
    """Round the base quantity down to ``numeratorScale`` decimals."""
    return quantity.quantize(symbol.qty_quantum, rounding=ROUND_DOWN)


def meets_min_total(price: Decimal, quantity: Decimal, symbol: SymbolInfo) -> bool:
    return symbol.min_total is None or price * quantity >= symbol.min_total


def prepare_limit_order(
    side: Literal["buy", "sell"], price: Decimal, quantity: Decimal, symbol: SymbolInfo
) -> PreparedOrder:
    """Round a limit order to the symbol's rules; raise RuleViolation if it cannot pass."""
    if side not in ("buy", "sell"):
        raise RuleViolation("bad_side", repr(side))
    if symbol.status and symbol.status.upper() != "TRADING":
        raise RuleViolation("symbol_not_trading", f"{symbol.name} status {symbol.status}")
    p = round_price(price, side, symbol)
    q = round_quantity(quantity, symbol)
    if p <= 0 or q <= 0:
        raise RuleViolation("non_positive_after_rounding", f"price={p} quantity={q}")
    if symbol.min_price is not None and p < symbol.min_price:
        raise RuleViolation("price_below_min", f"{p} < {symbol.min_price}")
    if symbol.max_price is not None and p > symbol.max_price:
        raise RuleViolation("price_above_max", f"{p} > {symbol.max_price}")
    if not meets_min_total(p, q, symbol):
        raise RuleViolation("below_min_total", f"{p * q} < {symbol.min_total}")
    return PreparedOrder(side=side, price=p, quantity=q)


def quantity_for_notional(notional: Decimal, price: Decimal, symbol: SymbolInfo) -> Decimal:
    """Largest allowed quantity whose value at ``price`` does not exceed ``notional``."""
    if price <= 0:
        raise RuleViolation("non_positive_price", str(price))
    return round_quantity(notional / price, symbol)
