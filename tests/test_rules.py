"""Property tests: rounding to exchange rules never adds risk and never breaks the rules."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_sim.engine import decimals_of
from shared.btcturk.models import SymbolInfo
from shared.btcturk.rules import (
    RuleViolation,
    prepare_limit_order,
    quantity_for_notional,
    round_price,
    round_quantity,
)


def make_symbol(num_scale: int, den_scale: int, has_fraction: bool) -> SymbolInfo:
    return SymbolInfo(
        name="XTRY",
        name_normalized="X_TRY",
        numerator="X",
        denominator="TRY",
        numerator_scale=num_scale,
        denominator_scale=den_scale,
        has_fraction=has_fraction,
        tick_size=Decimal("10"),  # deliberately not a multiple of the scale: not enforced
        min_price=Decimal("0.0001"),
        max_price=Decimal("100000000"),
        min_total=Decimal("99.91"),
        status="TRADING",
    )


symbols = st.builds(
    make_symbol,
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=0, max_value=8),
    st.booleans(),
)
prices = st.decimals(
    min_value=Decimal("0.001"), max_value=Decimal("9999999"), places=10, allow_nan=False
)
quantities = st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("100000"), places=10, allow_nan=False
)
sides = st.sampled_from(["buy", "sell"])


@given(prices, symbols)
def test_buy_price_rounds_down_sell_price_rounds_up(price: Decimal, sym: SymbolInfo) -> None:
    buy = round_price(price, "buy", sym)
    sell = round_price(price, "sell", sym)
    assert buy <= price <= sell
    assert sell - buy <= sym.price_quantum
    assert decimals_of(buy) <= sym.price_scale
    assert decimals_of(sell) <= sym.price_scale


@given(quantities, symbols)
def test_quantity_rounds_down_within_scale(qty: Decimal, sym: SymbolInfo) -> None:
    q = round_quantity(qty, sym)
    assert q <= qty
    assert qty - q < sym.qty_quantum
    assert decimals_of(q) <= sym.numerator_scale


@settings(max_examples=300)
@given(sides, prices, quantities, symbols)
def test_prepared_order_obeys_rules_or_is_rejected(
    side: str, price: Decimal, qty: Decimal, sym: SymbolInfo
) -> None:
    try:
        order = prepare_limit_order(side, price, qty, sym)  # type: ignore[arg-type]
    except RuleViolation as exc:
        assert exc.reason in {
            "non_positive_after_rounding",
            "below_min_total",
            "price_below_min",
            "price_above_max",
        }
        return
    assert decimals_of(order.price) <= sym.price_scale
    assert decimals_of(order.quantity) <= sym.numerator_scale
    assert order.quantity <= qty
    assert order.total >= sym.min_total  # never below the minimum unless rejected
    if side == "buy":
        assert order.price <= price
    else:
        assert order.price >= price


@given(
    st.decimals(min_value=Decimal("100"), max_value=Decimal("1000000"), places=2), prices, symbols
)
def test_quantity_for_notional_never_exceeds_budget(
    notional: Decimal, price: Decimal, sym: SymbolInfo
) -> None:
    q = quantity_for_notional(notional, price, sym)
    assert q * price <= notional
    assert decimals_of(q) <= sym.numerator_scale


def test_integer_price_when_no_fraction() -> None:
    btc = make_symbol(8, 2, False)
    assert round_price(Decimal("3600123.99"), "buy", btc) == Decimal("3600123")
    assert round_price(Decimal("3600123.01"), "sell", btc) == Decimal("3600124")


def test_min_total_rejects_instead_of_rounding_up() -> None:
    sym = make_symbol(8, 2, True)
    with pytest.raises(RuleViolation) as err:
        prepare_limit_order("buy", Decimal("100"), Decimal("0.999"), sym)
    assert err.value.reason == "below_min_total"
    ok = prepare_limit_order("buy", Decimal("100"), Decimal("1"), sym)
    assert ok.total == Decimal("100")


def test_not_trading_symbol_is_rejected() -> None:
    sym = make_symbol(8, 2, True)
    halted = SymbolInfo(**{**{f: getattr(sym, f) for f in sym.__struct_fields__}, "status": "HALT"})
    with pytest.raises(RuleViolation):
        prepare_limit_order("buy", Decimal("100"), Decimal("5"), halted)
