"""The strategy host's gating reducer (pure): throttle, backoff, open orders, epochs,
position refresh; and the injected clocks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.strategy import gating
from bus.messages import OpenOrder, OrderEvent
from shared.clock import LiveClock, ManualClock

D = Decimal


def order(cid: str, state: str = "OPEN", symbol: str = "X") -> OpenOrder:
    return OpenOrder(client_order_id=cid, intent_id="i-" + cid, symbol=symbol, side="buy",
                     price=D(1), quantity=D(1), filled_quantity=D(0), state=state)


def event(cid: str, state: str, filled: str = "0", symbol: str = "X") -> OrderEvent:
    return OrderEvent(client_order_id=cid, intent_id="i-" + cid, symbol=symbol, side="buy",
                      state=state, price=D(1), quantity=D(1), filled_quantity=D(filled))


def test_throttle_leading_and_trailing():
    g = gating.GatingState()
    assert gating.throttle_wait_ns(g, "X", 0, 500) == 0
    gating.mark_evaluated(g, "X", 0)
    assert gating.throttle_wait_ns(g, "X", 100, 500) == 400
    assert gating.throttle_wait_ns(g, "Y", 100, 500) == 0  # per symbol
    assert gating.throttle_wait_ns(g, "X", 500, 500) == 0
    # a message clock that went backwards never waits longer than one interval
    assert gating.throttle_wait_ns(g, "X", -1000, 500) == 500


def test_nothing_before_the_first_snapshot_then_first_sync_once():
    g = gating.GatingState()
    assert gating.blocked(g, "X", 0, every_tick=False) == "skip_not_synced"
    assert gating.apply_snapshot(g, [], since_mono=10) is True
    assert gating.apply_snapshot(g, [], since_mono=20) is False
    assert gating.blocked(g, "X", 0, every_tick=False) is None


def test_snapshot_keeps_orders_learnt_after_it_was_asked_for():
    g = gating.GatingState()
    gating.approved(g, "X", "old", now_mono=5)
    gating.approved(g, "X", "new", now_mono=15)
    gating.apply_snapshot(g, [order("snap"), order("done", state="FILLED")], since_mono=10)
    # "old" predates the query and is not in it: gone; "new" cannot be in it yet: kept
    assert g.open_ids("X") == ["new", "snap"]


def test_terminal_unfilled_order_moves_the_epoch_and_waits_for_a_fresh_snapshot():
    g = gating.GatingState()
    gating.apply_snapshot(g, [], since_mono=0)
    assert gating.apply_order_event(g, event("a", "OPEN"), now_mono=1) is False
    assert g.open_count("X") == 1
    assert gating.apply_order_event(g, event("a", "CANCELED"), now_mono=2) is True
    assert g.open_count("X") == 0 and g.epoch["X"] == 1
    assert gating.blocked(g, "X", 0, every_tick=False) == "skip_position_refresh"
    gating.apply_snapshot(g, [], since_mono=1)  # asked before the event: still dirty
    assert gating.blocked(g, "X", 0, every_tick=False) == "skip_position_refresh"
    gating.apply_snapshot(g, [], since_mono=3)
    assert gating.blocked(g, "X", 0, every_tick=False) is None
    # a filled order does not move the epoch (the position moved instead)
    gating.apply_order_event(g, event("b", "FILLED", filled="1"), now_mono=4)
    assert g.epoch["X"] == 1


def test_backoff_runs_on_the_message_clock():
    g = gating.GatingState()
    gating.apply_snapshot(g, [], since_mono=0)
    gating.rejected(g, "X", clock_ns=1_000, backoff_ns=5_000)
    assert gating.blocked(g, "X", 5_999, every_tick=False) == "skip_backoff"
    assert gating.blocked(g, "X", 5_999, every_tick=True) is None
    assert gating.blocked(g, "X", 6_000, every_tick=False) is None
    assert gating.blocked(g, "Y", 0, every_tick=False) is None


def test_pending_is_one_intent_per_symbol():
    g = gating.GatingState()
    gating.begin_intent(g, "X", "a")
    gating.begin_intent(g, "X", "b")
    gating.end_intent(g, "X", "a")  # a late answer for an older intent keeps the newer one
    assert g.pending == {"X": "b"}
    gating.end_intent(g, "X", "b")
    assert g.pending == {}


def test_duplicate_moves_on_only_when_nothing_is_open():
    g = gating.GatingState()
    gating.apply_snapshot(g, [], since_mono=0)
    gating.approved(g, "X", "c", now_mono=1)
    assert gating.duplicate(g, "X", now_mono=2) is False and "X" not in g.epoch
    gating.apply_order_event(g, event("c", "FILLED", filled="1"), now_mono=3)
    assert gating.duplicate(g, "X", now_mono=4) is True and g.epoch["X"] == 1
    assert "X" in g.dirty


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                          st.sampled_from(["OPEN", "PARTIAL", "FILLED", "CANCELED"])),
                max_size=30))
def test_open_orders_are_exactly_the_non_terminal_ones(events):
    g = gating.GatingState()
    last: dict[str, str] = {}
    for mono, (cid, state) in enumerate(events):
        gating.apply_order_event(g, event(cid, state), now_mono=mono)
        last[cid] = state
    assert g.open_ids("X") == sorted(c for c, s in last.items() if s in ("OPEN", "PARTIAL"))


def test_manual_clock_moves_only_when_told():
    c = ManualClock(wall_ns=100, mono_ns=7)
    assert (c.wall_ns(), c.mono_ns()) == (100, 7)
    c.advance(5)
    assert (c.wall_ns(), c.mono_ns()) == (105, 12)
    c.set_wall(200)
    assert (c.wall_ns(), c.mono_ns()) == (200, 107)
    with pytest.raises(ValueError):
        c.advance(-1)
    live = LiveClock()
    assert live.mono_ns() <= live.mono_ns()
