"""Pure conversion of exchangeinfo symbols to the bus's ``SymbolRules`` (no I/O)."""

from __future__ import annotations

from decimal import Decimal

from bus.messages import SymbolRules
from shared.btcturk.models import ExchangeInfo, SymbolInfo


class UnknownSymbols(Exception):
    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"symbols not listed by exchangeinfo: {', '.join(missing)}")
        self.missing = missing


def to_symbol_rules(info: SymbolInfo, symbol: str) -> SymbolRules:
    """``price_scale`` honours ``hasFraction`` (integer prices when false).
    Absent bounds travel as 0, which consumers read as "no bound"."""
    return SymbolRules(
        symbol=symbol,
        base=info.numerator,
        quote=info.denominator,
        price_scale=info.price_scale,
        qty_scale=info.numerator_scale,
        tick_size=info.tick_size if info.tick_size is not None else Decimal(0),
        min_price=info.min_price if info.min_price is not None else Decimal(0),
        max_price=info.max_price if info.max_price is not None else Decimal(0),
        min_total=info.min_total if info.min_total is not None else Decimal(0),
        status=info.status or "TRADING",
    )


def rules_for(info: ExchangeInfo, symbols: list[str]) -> dict[str, SymbolRules]:
    """Rules of every configured symbol; raises ``UnknownSymbols`` naming the missing."""
    found: dict[str, SymbolRules] = {}
    missing: list[str] = []
    for symbol in symbols:
        try:
            found[symbol] = to_symbol_rules(info.symbol(symbol), symbol)
        except KeyError:
            missing.append(symbol)
    if missing:
        raise UnknownSymbols(missing)
    return found
