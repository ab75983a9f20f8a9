"""Exchange-rule rounding for risk, on the bus's ``SymbolRules``.

The arithmetic is shared/btcturk/rules.py (the client engineer's, one policy for the
whole system): BUY price down, SELL price up, quantity down. This module only adapts
``SymbolRules`` (what risk learns from ``md.rules.*``) to that module's ``SymbolInfo``.
"""

from __future__ import annotations

from decimal import Decimal

from bus.messages import Side, SymbolRules
from shared.btcturk import rules as exrules
from shared.btcturk.models import SymbolInfo


def symbol_info(rules: SymbolRules) -> SymbolInfo:
    """``price_scale`` in SymbolRules already honours hasFraction, so it maps to a
    fractional denominator scale. Bounds of 0 mean "no bound"."""
    return SymbolInfo(
        name=rules.symbol, name_normalized=f"{rules.base}_{rules.quote}",
        numerator=rules.base, denominator=rules.quote,
        numerator_scale=rules.qty_scale, denominator_scale=rules.price_scale,
        has_fraction=True, tick_size=rules.tick_size or None,
        min_price=rules.min_price or None, max_price=rules.max_price or None,
        min_total=rules.min_total or None, status=rules.status,
    )


def round_price(price: Decimal, side: Side, rules: SymbolRules) -> Decimal:
    return exrules.round_price(price, side, symbol_info(rules))


def round_quantity(quantity: Decimal, rules: SymbolRules) -> Decimal:
    return exrules.round_quantity(quantity, symbol_info(rules))
