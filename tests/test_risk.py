"""Risk: every gate and every limit has a test that fails if the check is removed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.risk.decision import decide
from actors.risk.state import (
    RiskState,
    apply_book,
    apply_control,
    apply_feed_status,
    apply_order_event,
    apply_rules,
    apply_snapshot,
    record_approval,
)
from bus.messages import (
    Balance,
    BookSnapshot,
    Control,
    FeedStatus,
    Intent,
    KeyCounts,
    Latches,
    OrderEvent,
    PortfolioSnapshot,
    Position,
    SymbolRules,
)
from shared.config import Config

S = 1_000_000_000
NOW = 1_700_000_000 * S
D = Decimal


def make_cfg(**risk) -> Config:
    cfg = Config()
    cfg.mode = "paper"
    cfg.risk.cooldown_s = 60.0
    for k, v in risk.items():
        setattr(cfg.risk, k, v)
    return cfg


def eth_rules(**kw) -> SymbolRules:
    base = dict(symbol="ETHTRY", base="ETH", quote="TRY", price_scale=2, qty_scale=8,
                tick_size=D("1"), min_price=D("0.0001"), max_price=D("100000000"),
                min_total=D("99.91"))
    base.update(kw)
    return SymbolRules(**base)


def snapshot(*, free=D("100000"), positions=(), open_orders=(), latches=None):
    return PortfolioSnapshot(
        positions=list(positions), balances=[Balance(asset="TRY", free=free, locked=D(0))],
        open_orders=list(open_orders), latches=latches or Latches(), keys=KeyCounts())


def advance(st: RiskState, now: int) -> None:
    """Fresh book and executor snapshot at ``now`` (time moves on in a test)."""
    apply_book(st, BookSnapshot(symbol="ETHTRY", bids=[(D("140000"), D("1"))],
                                asks=[(D("140010"), D("1"))], source="ws", exchange_ts_ms=0,
                                recv_wall_ns=now - S // 10, recv_mono_ns=0, age_ms=0))
    st.snapshot_wall_ns = now


def ready_state(now=NOW, **snap) -> RiskState:
    st = RiskState()
    apply_rules(st, eth_rules())
    apply_feed_status(st, FeedStatus(symbol="ETHTRY", fresh=True, source="ws", age_ms=0))
    apply_book(st, BookSnapshot(symbol="ETHTRY", bids=[(D("140000"), D("1"))],
                                asks=[(D("140010"), D("1"))], source="ws", exchange_ts_ms=0,
                                recv_wall_ns=now - S // 10, recv_mono_ns=0, age_ms=0))
    apply_snapshot(st, snapshot(**snap), now - S, "TRY")
    return st


def intent(side="buy", price=D("140010"), qty=D("0.001"), n=0, now=NOW) -> Intent:
    return Intent(intent_id=f"i-{side}-{n}", symbol="ETHTRY", side=side, order_type="limit",
                  price=price, quantity=qty, reason="t", ttl_s=120, strategy="s",
                  created_wall_ns=now)


def test_baseline_is_approved():
    v = decide(intent(), ready_state(), make_cfg(), NOW)
    assert v.verdict == "approved", v.reasons
    assert v.reasons == []
    assert v.price == D("140010") and v.quantity == D("0.001")


# --- gates ----------------------------------------------------------------------------


def test_gate_kill_switch_config():
    cfg = make_cfg()
    cfg.gates.kill_switch = True
    assert "gate:kill_switch" in decide(intent(), ready_state(), cfg, NOW).reasons


def test_gate_kill_switch_persisted_latch():
    st = ready_state(latches=Latches(kill_switch=True))
    v = decide(intent(), st, make_cfg(), NOW)
    assert v.verdict == "rejected" and "gate:kill_switch" in v.reasons


def test_gate_kill_switch_control_message_at_once_and_off_again():
    st = ready_state()
    apply_control(st, Control(command="kill_switch_on"))
    assert "gate:kill_switch" in decide(intent(), st, make_cfg(), NOW).reasons
    apply_control(st, Control(command="kill_switch_off"))
    assert decide(intent(), st, make_cfg(), NOW).verdict == "approved"


def test_gate_safe_mode():
    cfg = make_cfg()
    cfg.gates.safe_mode = True
    v = decide(intent(), ready_state(), cfg, NOW)
    assert v.verdict == "rejected" and "gate:safe_mode" in v.reasons


def test_gate_live_not_armed_by_default():
    cfg = make_cfg()
    cfg.mode = "live"
    v = decide(intent(), ready_state(), cfg, NOW)
    assert v.verdict == "rejected" and "gate:live_not_armed" in v.reasons


def test_gate_live_armed_passes():
    cfg = make_cfg()
    cfg.mode = "live"
    cfg.gates.live_trading = True
    cfg.gates.live_trading_ack = "I_UNDERSTAND"
    cfg.exchange.api_key, cfg.exchange.api_secret = "k", "s"
    assert decide(intent(), ready_state(), cfg, NOW).verdict == "approved"


def test_gate_unknown_mode():
    cfg = make_cfg()
    cfg.mode = "yolo"  # type: ignore[assignment]
    assert "gate:mode" in decide(intent(), ready_state(), cfg, NOW).reasons


def test_gate_safety_latch():
    st = ready_state(latches=Latches(safety_latch=True, reason="reconcile failures"))
    v = decide(intent(), st, make_cfg(), NOW)
    assert v.verdict == "rejected" and "gate:safety_latch" in v.reasons


@pytest.mark.parametrize("how", ["control", "latch"])
def test_gate_paused(how):
    st = ready_state(latches=Latches(paused=how == "latch"))
    if how == "control":
        apply_control(st, Control(command="pause"))
    v = decide(intent(), st, make_cfg(), NOW)
    assert v.verdict == "rejected" and "gate:paused" in v.reasons
    apply_control(st, Control(command="resume"))
    assert decide(intent(), st, make_cfg(), NOW).verdict == "approved"


def test_gate_executor_state_unknown_without_snapshot():
    st = RiskState()
    apply_rules(st, eth_rules())
    v = decide(intent(), st, make_cfg(), NOW)
    assert "gate:executor_state_unknown" in v.reasons


def test_gate_executor_state_stale():
    st = ready_state()
    late = NOW + 31 * S
    v = decide(intent(now=late), st, make_cfg(), late)
    assert "gate:executor_state_stale" in v.reasons


# --- market data ----------------------------------------------------------------------


def test_stale_feed_status_rejects():
    st = ready_state()
    apply_feed_status(st, FeedStatus(symbol="ETHTRY", fresh=False, source="ws", age_ms=20000))
    v = decide(intent(), st, make_cfg(), NOW)
    assert v.verdict == "rejected" and v.reasons == ["market_data:stale"]


def test_unknown_freshness_is_stale():
    st = ready_state()
    st.feed.clear()
    assert decide(intent(), st, make_cfg(), NOW).reasons == ["market_data:stale"]


def test_old_book_is_stale_even_if_status_says_fresh():
    st = ready_state()
    cfg = make_cfg()
    later = NOW + int(cfg.marketdata.max_data_age_s * S) + S
    assert "market_data:stale" in decide(intent(now=later), st, cfg, later).reasons


def test_no_book_is_stale():
    st = ready_state()
    st.books.clear()
    assert decide(intent(), st, make_cfg(), NOW).reasons == ["market_data:stale"]


def test_stale_data_gives_zero_approvals():
    st = ready_state()
    apply_feed_status(st, FeedStatus(symbol="ETHTRY", fresh=False, source="rest", age_ms=None))
    cfg = make_cfg(cooldown_s=0.0, max_orders_per_minute=10_000, max_open_orders_per_symbol=10_000)
    verdicts = [decide(intent(n=i, now=NOW + i), st, cfg, NOW + i) for i in range(200)]
    assert all(v.verdict == "rejected" and "market_data:stale" in v.reasons for v in verdicts)


# --- exchange rules -----------------------------------------------------------------------


def test_rules_unavailable():
    st = ready_state()
    st.rules.clear()
    v = decide(intent(), st, make_cfg(), NOW)
    assert v.verdict == "rejected" and v.reasons == ["exchange_rules_unavailable"]


def test_symbol_not_trading():
    st = ready_state()
    apply_rules(st, eth_rules(status="HALTED"))
    assert "exchange:symbol_not_trading" in decide(intent(), st, make_cfg(), NOW).reasons


def test_rounding_buy_down_sell_up_qty_down():
    v = decide(intent(price=D("140010.129"), qty=D("0.001234567891")), ready_state(),
               make_cfg(), NOW)
    assert (v.price, v.quantity) == (D("140010.12"), D("0.00123456"))
    st = ready_state(positions=[Position(symbol="ETHTRY", quantity=D("1"), avg_cost=D("1"))])
    v = decide(intent("sell", price=D("140010.121"), qty=D("0.001234567891")), st,
               make_cfg(), NOW)
    assert (v.price, v.quantity) == (D("140010.13"), D("0.00123456"))


def test_integer_price_scale():
    st = ready_state()
    apply_rules(st, eth_rules(price_scale=0))
    v = decide(intent(price=D("140010.9")), st, make_cfg(), NOW)
    assert v.price == D("140010")


def test_non_positive_after_rounding():
    st = ready_state()
    v = decide(intent(qty=D("0.000000001")), st, make_cfg(min_order_notional_try=D(0)), NOW)
    assert v.verdict == "rejected" and "exchange:non_positive_after_rounding" in v.reasons


def test_exchange_min_total():
    st = ready_state()
    # 140010 * 0.0007 = 98.007 < 99.91 (min_total), > 10 (min notional)
    v = decide(intent(qty=D("0.0007")), st, make_cfg(), NOW)
    assert v.verdict == "rejected" and v.reasons == ["exchange:min_total"]


def test_price_bounds():
    st = ready_state()
    apply_rules(st, eth_rules(max_price=D("100000")))
    assert decide(intent(), st, make_cfg(), NOW).reasons == ["exchange:price_bounds"]


# --- limits -----------------------------------------------------------------------------


def test_limit_min_notional():
    st = ready_state()
    apply_rules(st, eth_rules(min_total=D(0)))
    v = decide(intent(qty=D("0.00005")), st, make_cfg(), NOW)  # 7 TRY < 10
    assert v.verdict == "rejected" and v.reasons == ["limit:min_notional"]


def test_limit_max_notional_resizes():
    st = ready_state()
    v = decide(intent(qty=D("0.01")), st, make_cfg(max_notional_per_order_try=D("500")), NOW)
    assert v.verdict == "resized" and v.reasons == ["limit:max_notional"]
    assert v.price * v.quantity <= D("500")
    assert v.quantity == D("0.00357117")  # 500/140010 rounded down


def test_limit_max_notional_off_by_default():
    v = decide(intent(qty=D("0.01")), ready_state(), make_cfg(), NOW)
    assert v.verdict == "approved"


def test_limit_position_cap_resizes_then_rejects():
    pos = Position(symbol="ETHTRY", quantity=D("0.03"), avg_cost=D("140000"))
    st = ready_state(positions=[pos])  # 0.03 * 140010 = 4200.3 of 5000
    v = decide(intent(qty=D("0.01")), st, make_cfg(), NOW)
    assert v.verdict == "resized" and "limit:position_cap" in v.reasons
    assert (D("0.03") + v.quantity) * v.price <= D("5000")
    full = ready_state(positions=[Position(symbol="ETHTRY", quantity=D("0.04"),
                                           avg_cost=D("140000"))])
    v = decide(intent(qty=D("0.01")), full, make_cfg(), NOW)
    assert v.verdict == "rejected" and "limit:position_cap" in v.reasons


def test_limit_cash_reserve():
    st = ready_state(free=D("350"))  # 50 above the 300 reserve
    v = decide(intent(qty=D("0.001")), st, make_cfg(), NOW)  # wants 140
    assert v.verdict == "rejected"
    assert "limit:cash_reserve" in v.reasons  # 50 TRY left: below the exchange minimum
    st = ready_state(free=D("420"))  # 120 available -> resize to <= 120
    v = decide(intent(qty=D("0.001")), st, make_cfg(), NOW)
    assert v.verdict == "resized" and v.reasons == ["limit:cash_reserve"]
    assert v.price * v.quantity <= D("120")
    st = ready_state(free=D("250"))
    assert "limit:cash_reserve" in decide(intent(), st, make_cfg(), NOW).reasons


def test_limit_cash_unknown_rejects_buys():
    st = ready_state()
    st.free_quote = None
    assert "limit:cash_unknown" in decide(intent(), st, make_cfg(), NOW).reasons


def test_sell_limited_to_position():
    st = ready_state(positions=[Position(symbol="ETHTRY", quantity=D("0.002"),
                                         avg_cost=D("100000"))])
    v = decide(intent("sell", price=D("140000"), qty=D("0.005")), st, make_cfg(), NOW)
    assert v.verdict == "resized" and v.quantity == D("0.002")
    v = decide(intent("sell", price=D("140000")), ready_state(), make_cfg(), NOW)
    assert v.verdict == "rejected" and "limit:position_available" in v.reasons


def test_limit_max_open_orders():
    st = ready_state()
    apply_order_event(st, OrderEvent(client_order_id="c1", intent_id="x", symbol="ETHTRY",
                                     side="buy", state="OPEN", price=D("1"), quantity=D("1"),
                                     filled_quantity=D(0)))
    v = decide(intent(), st, make_cfg(), NOW)
    assert v.verdict == "rejected" and "limit:max_open_orders" in v.reasons
    apply_order_event(st, OrderEvent(client_order_id="c1", intent_id="x", symbol="ETHTRY",
                                     side="buy", state="CANCELED", price=D("1"),
                                     quantity=D("1"), filled_quantity=D(0)))
    assert decide(intent(), st, make_cfg(), NOW).verdict == "approved"


def test_limit_max_open_orders_from_snapshot():
    from bus.messages import OpenOrder
    oo = OpenOrder(client_order_id="c", intent_id="i", symbol="ETHTRY", side="buy",
                   price=D("1"), quantity=D("1"), filled_quantity=D(0), state="OPEN")
    st = ready_state(open_orders=[oo])
    assert "limit:max_open_orders" in decide(intent(), st, make_cfg(), NOW).reasons


def test_limit_cooldown():
    st = ready_state()
    cfg = make_cfg(max_open_orders_per_symbol=100)
    record_approval(st, "ETHTRY", "c1", "buy", D("140010"), D("0.001"), NOW)
    later = NOW + 59 * S
    v = decide(intent(now=later), st, cfg, later)
    assert v.verdict == "rejected" and "limit:cooldown" in v.reasons
    later = NOW + 61 * S
    advance(st, later)
    assert decide(intent(now=later), st, cfg, later).verdict == "approved"


def test_limit_order_rate():
    st = ready_state()
    cfg = make_cfg(max_open_orders_per_symbol=100, cooldown_s=0.0, max_orders_per_minute=3)
    for i in range(3):
        record_approval(st, "ETHTRY", f"c{i}", "buy", D("1"), D("0.0001"), NOW - i * S)
    v = decide(intent(), st, cfg, NOW)
    assert v.verdict == "rejected" and v.reasons == ["limit:order_rate"]
    later = NOW + 59 * S
    advance(st, later)
    v = decide(intent(now=later), st, cfg, later)  # the oldest two left the window
    assert v.verdict == "approved", v.reasons


def test_limit_daily_loss():
    cfg = make_cfg()
    st = ready_state(positions=[Position(symbol="ETHTRY", quantity=D(0), avg_cost=D(0),
                                         realized_pnl=D("100"))])
    apply_snapshot(st, snapshot(positions=[Position(symbol="ETHTRY", quantity=D(0),
                                                    avg_cost=D(0), realized_pnl=D("-450"))]),
                   NOW, "TRY")
    v = decide(intent(), st, cfg, NOW)
    assert v.verdict == "rejected" and v.reasons == ["limit:daily_loss"]


def test_daily_loss_resets_on_a_new_day():
    st = ready_state(positions=[Position(symbol="ETHTRY", quantity=D(0), avg_cost=D(0),
                                         realized_pnl=D("-600"))])
    assert decide(intent(), st, make_cfg(), NOW).verdict == "approved"  # baseline is today


def test_daily_loss_counts_fees_once_and_open_positions_at_the_mid():
    cfg = make_cfg(max_daily_loss_try=D("100"))
    st = ready_state()  # flat at the day's first snapshot: baseline net 0
    # realised +50 gross, 60 fees: net -10; 1 ETH bought at 140100 marked at the mid
    # 140005: -95; net -105 -> a loss of 105 >= 100
    apply_snapshot(st, snapshot(positions=[Position(
        symbol="ETHTRY", quantity=D(1), avg_cost=D("140100"), realized_pnl=D("50"),
        fees=D("60"))]), NOW, "TRY")
    assert st.daily_loss() == D("105")
    assert decide(intent(), st, cfg, NOW).reasons == ["limit:daily_loss"]
    # the same figures with fees counted twice would be 165; with realised net of
    # fees read as gross, 45: both wrong, only 105 is the definition
    cfg.risk.max_daily_loss_try = D("106")
    assert "limit:daily_loss" not in decide(intent(), st, cfg, NOW).reasons


def test_daily_loss_resets_at_istanbul_midnight():
    """Europe/Istanbul is UTC+3: its midnight is 21:00 UTC."""
    cfg = make_cfg()
    before = 1_700_168_399 * S  # 2023-11-16 20:59:59 UTC = 23:59:59 in Istanbul
    after = before + S  # 21:00:00 UTC: a new trading day
    st = ready_state(now=before)
    losing = snapshot(positions=[Position(symbol="ETHTRY", quantity=D(0), avg_cost=D(0),
                                          realized_pnl=D("-600"))])
    apply_snapshot(st, losing, before, "TRY")
    assert decide(intent(now=before), st, cfg, before).reasons == ["limit:daily_loss"]
    apply_snapshot(st, losing, after, "TRY")
    assert st.daily_loss() == 0
    assert decide(intent(now=after), st, cfg, after).verdict == "approved"
    # UTC midnight is no boundary: three hours later, losses still count
    apply_snapshot(st, snapshot(positions=[Position(
        symbol="ETHTRY", quantity=D(0), avg_cost=D(0), realized_pnl=D("-1200"))]),
        after + 3 * 3600 * S, "TRY")
    assert st.daily_loss() == D("600")


def test_daily_boundary_is_configurable_and_validated(tmp_path):
    from shared.config import ConfigError, load_config
    from shared.tradingday import TradingDay
    utc_8 = TradingDay.named("UTC", 8)
    t = 1_700_121_599 * S  # 2023-11-16 07:59:59 UTC
    assert utc_8.day(t + S) == utc_8.day(t) + 1
    assert utc_8.day(t + S) == utc_8.day(t + 23 * 3600 * S + 59 * 60 * S)
    for body, field in (('day_boundary_tz = "Mars/Olympus"', "risk.day_boundary_tz"),
                        ("day_boundary_hour = 24", "risk.day_boundary_hour")):
        path = tmp_path / "c.toml"
        path.write_text(f"[risk]\n{body}\n")
        with pytest.raises(ConfigError, match=field):
            load_config(path)


def test_daily_baseline_waits_for_a_book_of_every_held_position():
    st = RiskState()
    held = snapshot(positions=[Position(symbol="ETHTRY", quantity=D(1), avg_cost=D("150000"))])
    apply_snapshot(st, held, NOW, "TRY")  # no book yet: provisional baseline
    advance(st, NOW + S)  # the book arrives: 10005 under water since before today
    apply_snapshot(st, held, NOW + S, "TRY")
    assert st.daily_loss() == 0  # yesterday's loss is not today's


def test_market_orders_rejected():
    i = intent()
    i = Intent(**{**{f: getattr(i, f) for f in i.__struct_fields__}, "order_type": "market"})
    assert "intent:unsupported_order_type" in decide(i, ready_state(), make_cfg(), NOW).reasons


def test_defaults_cannot_trade_live():
    cfg = Config()
    cfg.mode = "live"
    v = decide(intent(), ready_state(), cfg, NOW)
    assert v.verdict == "rejected" and "gate:live_not_armed" in v.reasons


def test_decide_is_deterministic():
    a = decide(intent(qty=D("0.01")), ready_state(), make_cfg(max_notional_per_order_try=D(900)),
               NOW)
    b = decide(intent(qty=D("0.01")), ready_state(), make_cfg(max_notional_per_order_try=D(900)),
               NOW)
    assert a == b


def test_a_snapshot_before_any_message_clock_takes_no_day_baseline():
    """Clock 0 (risk just started, no md yet) is no day: the baseline waits for the first
    real clock; otherwise day 0's baseline would be replaced by today's after fills that
    then went uncounted (and a baseline restored after a restart would be lost)."""
    st = RiskState()
    st.day, st.day_start_net, st.day_start_marked = (
        st.trading_day.day(NOW), D("-40"), True)  # restored from risk.day
    losing = snapshot(positions=[Position(symbol="ETHTRY", quantity=D(0), avg_cost=D(0),
                                          realized_pnl=D("-100"))])
    apply_snapshot(st, losing, 0, "TRY")
    assert (st.day_start_net, st.daily_loss()) == (D("-40"), D("60"))
    apply_snapshot(st, losing, NOW, "TRY")
    assert st.daily_loss() == D("60")
