"""ProfitAwareStrategyV1 (the shipped plug-in) through the strategy host: decisions on
fixed book sequences match hand-computed values; intent ids."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.strategy import gating
from actors.strategy.host import StrategyHost, position_anchor
from actors.strategy.plugins.profit_aware import ProfitAware, ProfitAwareParams
from bus.messages import (
    Balance,
    BookSnapshot,
    Intent,
    KeyCounts,
    Latches,
    PortfolioSnapshot,
    Position,
    SymbolRules,
)
from shared.ids import intent_id

D = Decimal
T0 = 1_700_000_000_000_000_000
STRATEGY = ProfitAware.name
RULES = SymbolRules(symbol="BTCTRY", base="BTC", quote="TRY", price_scale=0, qty_scale=8,
                    tick_size=D(1), min_price=D(0), max_price=D(0), min_total=D(0))


def view(bid, ask, *, pos=None, free=D("1000"), open_orders=0, pending=False, epoch=0,
         key="0") -> dict:
    return dict(bid=D(bid), ask=D(ask), pos=pos, free=free, open_orders=open_orders,
                pending=pending, epoch=epoch, key=key)


def decide(v: dict, params: ProfitAwareParams, now: int, boot: int = 0) -> Intent | None:
    """One on_book decision of a host holding exactly the state ``v`` describes."""
    host = StrategyHost(ProfitAware(params), boot=boot)
    host.apply_rules(RULES)
    host.apply_book(BookSnapshot(symbol="BTCTRY", bids=[(v["bid"], D(1))],
                                 asks=[(v["ask"], D(1))], source="ws", exchange_ts_ms=0,
                                 recv_wall_ns=0, recv_mono_ns=0, age_ms=0,
                                 change_set=int(v["key"])), now)
    host.apply_snapshot(PortfolioSnapshot(
        positions=[v["pos"]] if v["pos"] is not None else [],
        balances=[Balance(asset="TRY", free=v["free"], locked=D(0))], open_orders=[],
        latches=Latches(), keys=KeyCounts()), since_mono=0)
    for n in range(v["open_orders"]):
        gating.approved(host.gate, "BTCTRY", f"c{n}", now_mono=1)
    if v["pending"]:
        gating.begin_intent(host.gate, "BTCTRY", "earlier")
    host.gate.epoch["BTCTRY"] = v["epoch"]
    out = host.decide("BTCTRY")
    assert out.failure is None and len(out.intents) <= 1
    return out.intents[0] if out.intents else None


P = ProfitAwareParams()


def test_defaults_match_the_old_bot():
    assert (P.min_profit_bps, P.entry_max_spread, P.entry_notional_try,
            P.take_profit_fraction, P.ttl_s) == (30, D("0.01"), D("100"), D("0.25"), 120.0)
    assert P.trade_every_tick is False


def test_flat_tight_spread_buys_100_try_at_the_ask():
    i = decide(view("3600000", "3601000"), P, T0)
    assert i is not None
    assert (i.side, i.price, i.reason, i.order_type) == ("buy", D("3601000"),
                                                         "conservative_entry", "limit")
    assert i.quantity == D("100") / D("3601000")
    assert i.ttl_s == 120.0 and i.created_wall_ns == T0 and i.strategy == STRATEGY


def test_entry_uses_free_try_when_below_100():
    i = decide(view("100", "100.5", free=D("40")), P, T0)
    assert i is not None and i.quantity == D("40") / D("100.5")


def test_no_entry_without_cash():
    assert decide(view("100", "100.5", free=D("0")), P, T0) is None


def test_spread_limit_is_inclusive_at_one_percent():
    assert decide(view("100", "101"), P, T0) is not None  # exactly 1 %
    assert decide(view("100", "101.01"), P, T0) is None  # 1.01 %


def test_take_profit_sells_a_quarter_at_the_bid():
    pos = Position(symbol="BTCTRY", quantity=D("0.04"), avg_cost=D("100000"))
    # target = 100000 * 1.003 = 100300; a quarter is 0.01 = 1003 TRY, above the minimum
    assert decide(view("100299", "100400", pos=pos), P, T0) is None  # holding, not profitable
    i = decide(view("100300", "100400", pos=pos), P, T0)
    assert i is not None
    assert (i.side, i.price, i.quantity, i.reason) == ("sell", D("100300"), D("0.01"),
                                                       "take_profit")


def test_take_profit_never_sells_less_than_the_exchange_would_accept():
    # a quarter of 0.004 is 100.3 TRY < min_exit_notional_try (110): sell 110 TRY worth
    pos = Position(symbol="BTCTRY", quantity=D("0.004"), avg_cost=D("100000"))
    i = decide(view("100300", "100400", pos=pos), P, T0)
    assert i is not None and i.quantity == D("110") / D("100300")
    # a position worth less than that is sold whole
    small = Position(symbol="BTCTRY", quantity=D("0.001"), avg_cost=D("100000"))
    i = decide(view("100300", "100400", pos=small), P, T0)
    assert i is not None and i.quantity == D("0.001")


def test_holding_never_enters_even_with_tight_spread():
    pos = Position(symbol="BTCTRY", quantity=D("0.004"), avg_cost=D("200000"))
    assert decide(view("100000", "100001", pos=pos), P, T0) is None


def test_no_intent_while_open_order_or_pending():
    assert decide(view("100", "100.5", open_orders=1), P, T0) is None
    assert decide(view("100", "100.5", pending=True), P, T0) is None


def test_bad_books_are_ignored():
    # A zero price never reaches a strategy: the message itself refuses it (bus/messages.py).
    with pytest.raises(ValueError, match="bids price must be > 0"):
        decide(view("0", "100"), P, T0)
    assert decide(view("101", "100"), P, T0) is None  # crossed


def test_book_sequence_hand_computed():
    """A sequence of books with position changes in between, as the actor feeds it."""
    seq = [
        # (bid, ask, position qty, avg cost) -> expected (side, price, qty) or None
        (("100", "102", None), None),  # spread 2 %: wait
        (("100", "100.8", None), ("buy", D("100.8"), D("100") / D("100.8"))),
        (("100.1", "100.9", (D("0.99"), D("100.8"))), None),  # bought; 100.1 < 101.1024
        # 25 % would be 25 TRY, under the exchange minimum: the whole 100 TRY goes
        (("101.1024", "101.2", (D("0.99"), D("100.8"))), ("sell", D("101.1024"),
                                                            D("0.99"))),
        (("99", "99.5", (D("0.7425"), D("100.8"))), None),  # under water: hold
    ]
    for (bid, ask, pos), expected in seq:
        position = None if pos is None else Position(symbol="BTCTRY", quantity=pos[0],
                                                     avg_cost=pos[1])
        got = decide(view(bid, ask, pos=position), P, T0)
        if expected is None:
            assert got is None, (bid, ask)
        else:
            assert got is not None and (got.side, got.price, got.quantity) == expected


def test_intent_id_is_deterministic_across_time_and_restarts():
    a = decide(view("100", "100.5"), P, T0)
    b = decide(view("100.2", "100.6"), P, T0 + 10**12)  # other book, later: same decision
    assert a is not None and b is not None and a.intent_id == b.intent_id
    assert a.intent_id == intent_id(STRATEGY, "BTCTRY", "buy", "conservative_entry",
                                    position_anchor(None, 0) + "|b=0")
    # another boot of the host (a restart): never the same id
    c = decide(view("100", "100.5"), P, T0, boot=1)
    assert c is not None and c.intent_id != a.intent_id and c.boot == 1


def test_intent_id_moves_with_position_fees_and_epoch():
    base = decide(view("100", "100.5"), P, T0)
    after_round_trip = decide(view("100", "100.5", pos=Position(
        symbol="BTCTRY", quantity=D(0), avg_cost=D(0), realized_pnl=D("1.2"),
        fees=D("0.4"))), P, T0)
    retried = decide(view("100", "100.5", epoch=1), P, T0)
    ids = {base.intent_id, after_round_trip.intent_id, retried.intent_id}
    assert len(ids) == 3


def test_trade_every_tick_emits_on_every_book_with_unique_ids():
    p = ProfitAwareParams(trade_every_tick=True)
    pos = Position(symbol="BTCTRY", quantity=D("1"), avg_cost=D("1000"))
    ids = set()
    for n in range(5):
        i = decide(view("100", "100.5", pos=pos, open_orders=1, pending=True, key=str(n)),
                   p, T0)
        assert i is not None and i.side == "buy"
        ids.add(i.intent_id)
    assert len(ids) == 5
    again = decide(view("100", "100.5", pos=pos, key="0"), p, T0)
    assert again is not None and again.intent_id in ids  # same tick, same id
