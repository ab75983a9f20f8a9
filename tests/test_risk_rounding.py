"""Property tests: risk's rounding never crosses the exchange's scales, always rounds to
the safe side, and never approves an order below the exchange minimum total."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.risk.decision import decide
from actors.risk.rounding import round_price, round_quantity
from actors.risk.state import RiskState, apply_book, apply_feed_status, apply_rules, apply_snapshot
from bus.messages import (
    Balance,
    BookSnapshot,
    FeedStatus,
    Intent,
    KeyCounts,
    Latches,
    PortfolioSnapshot,
    Position,
    SymbolRules,
)
from shared.config import Config

NOW = 1_700_000_000 * 1_000_000_000

prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("10000000"), places=10,
                     allow_nan=False, allow_infinity=False)
qtys = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000"), places=12,
                   allow_nan=False, allow_infinity=False)
scales = st.integers(min_value=0, max_value=8)
min_totals = st.decimals(min_value=Decimal("0"), max_value=Decimal("500"), places=2)


def rules_of(price_scale: int, qty_scale: int, min_total: Decimal) -> SymbolRules:
    return SymbolRules(symbol="XTRY", base="X", quote="TRY", price_scale=price_scale,
                       qty_scale=qty_scale, tick_size=Decimal(0), min_price=Decimal(0),
                       max_price=Decimal(0), min_total=min_total)


def state_for(rules: SymbolRules, price: Decimal) -> RiskState:
    s = RiskState()
    apply_rules(s, rules)
    apply_feed_status(s, FeedStatus(symbol="XTRY", fresh=True, source="ws", age_ms=0))
    apply_book(s, BookSnapshot(symbol="XTRY", bids=[(price, Decimal(1))],
                               asks=[(price, Decimal(1))], source="ws", exchange_ts_ms=0,
                               recv_wall_ns=NOW, recv_mono_ns=0, age_ms=0))
    big = Decimal("1e15")
    apply_snapshot(s, PortfolioSnapshot(
        positions=[Position(symbol="XTRY", quantity=big, avg_cost=Decimal(1))],
        balances=[Balance(asset="TRY", free=big, locked=Decimal(0))], open_orders=[],
        latches=Latches(), keys=KeyCounts()), NOW, "TRY")
    return s


def cfg_unlimited() -> Config:
    cfg = Config()
    cfg.risk.max_position_try_per_symbol = Decimal("1e30")
    return cfg


@settings(max_examples=400, deadline=None)
@given(prices, qtys, scales, scales, min_totals, st.sampled_from(["buy", "sell"]))
def test_approved_orders_respect_scales_side_and_min_total(price, qty, ps, qs, min_total, side):
    rules = rules_of(ps, qs, min_total)
    cfg = cfg_unlimited()
    intent = Intent(intent_id="i", symbol="XTRY", side=side, order_type="limit", price=price,
                    quantity=qty, reason="t", ttl_s=1, strategy="s", created_wall_ns=NOW)
    v = decide(intent, state_for(rules, price), cfg, NOW)
    if v.verdict == "rejected":
        assert set(v.reasons) <= {"exchange:min_total", "limit:min_notional",
                                  "exchange:non_positive_after_rounding"}, v.reasons
        return
    assert v.price == v.price.quantize(Decimal(1).scaleb(-ps))  # never finer than the scale
    assert v.quantity == v.quantity.quantize(Decimal(1).scaleb(-qs))
    assert v.quantity <= qty and v.quantity > 0
    assert v.price <= price if side == "buy" else v.price >= price  # the safe side
    assert abs(v.price - price) < Decimal(1).scaleb(-ps)  # moved by less than one step
    assert v.price * v.quantity >= min_total
    assert v.price * v.quantity >= cfg.risk.min_order_notional_try


@settings(max_examples=300, deadline=None)
@given(prices, qtys, scales, scales)
def test_rounding_helpers_are_idempotent_and_safe(price, qty, ps, qs):
    rules = rules_of(ps, qs, Decimal(0))
    b, s = round_price(price, "buy", rules), round_price(price, "sell", rules)
    assert b <= price <= s
    assert round_price(b, "buy", rules) == b and round_price(s, "sell", rules) == s
    q = round_quantity(qty, rules)
    assert 0 <= q <= qty and round_quantity(q, rules) == q
