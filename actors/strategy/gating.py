"""The strategy host's gating state: when a symbol may be decided on at all.

Pure, like actors/risk/state.py: every update is a function of (state, fact, clock
value passed in); nothing here reads a clock or does I/O. The actor feeds it bus
messages and request outcomes, and asks ``blocked`` before every decision.

What it tracks, per symbol:
- ``open_orders``: client order ids we believe open, each with the local monotonic
  time we learnt of it (an executor snapshot taken before that moment cannot know it);
- ``pending``: the intent awaiting risk's answer (one at a time per symbol);
- ``backoff_until``: after a rejection, no decision before this *message clock* value
  (the envelope time of the triggering book), so a replay skips the same books;
- ``epoch``: moves on when an order of ours ended without a fill, so the next decision
  on an unchanged position gets a new intent id;
- ``dirty``: the position changed (fill, terminal order) after the latest snapshot; no
  decision until a snapshot taken after that moment arrives;
- ``last_eval_ns``: the throttle (message clock of the last evaluation).
Two clocks appear, never mixed: ``mono`` values order local events, ``clock`` values
are the message clock that decisions run on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bus.messages import TERMINAL_ORDER_STATES, OpenOrder, OrderEvent


@dataclass
class GatingState:
    synced: bool = False  # an executor snapshot has been applied
    open_orders: dict[str, dict[str, int]] = field(default_factory=dict)  # sym -> cid -> mono
    pending: dict[str, str] = field(default_factory=dict)  # sym -> intent id
    backoff_until: dict[str, int] = field(default_factory=dict)  # sym -> message clock
    epoch: dict[str, int] = field(default_factory=dict)
    dirty: dict[str, int] = field(default_factory=dict)  # sym -> mono it went stale
    last_eval_ns: dict[str, int] = field(default_factory=dict)  # sym -> message clock

    def open_count(self, symbol: str) -> int:
        return len(self.open_orders.get(symbol, {}))

    def open_ids(self, symbol: str) -> list[str]:
        return sorted(self.open_orders.get(symbol, {}))


def apply_snapshot(state: GatingState, open_orders: Iterable[OpenOrder],
                   since_mono: int) -> bool:
    """The executor's open orders replace ours, except orders we learnt of at or after
    ``since_mono`` (when the snapshot was asked for): it cannot contain them yet. Dirty
    marks older than the snapshot are cleared. True when this is the first sync."""
    fresh: dict[str, dict[str, int]] = {}
    for o in open_orders:
        if o.state not in TERMINAL_ORDER_STATES:
            fresh.setdefault(o.symbol, {})[o.client_order_id] = since_mono
    for sym, orders in state.open_orders.items():
        for cid, seen in orders.items():
            if seen >= since_mono:
                fresh.setdefault(sym, {}).setdefault(cid, seen)
    state.open_orders = fresh
    state.dirty = {s: t for s, t in state.dirty.items() if t >= since_mono}
    first = not state.synced
    state.synced = True
    return first


def mark_dirty(state: GatingState, symbol: str, now_mono: int) -> None:
    state.dirty[symbol] = now_mono


def apply_order_event(state: GatingState, ev: OrderEvent, now_mono: int) -> bool:
    """True when the order ended (the position may have moved: refresh it)."""
    orders = state.open_orders.setdefault(ev.symbol, {})
    if ev.state not in TERMINAL_ORDER_STATES:
        orders.setdefault(ev.client_order_id, now_mono)
        return False
    orders.pop(ev.client_order_id, None)
    if ev.filled_quantity == 0 and ev.state != "FILLED":
        # Ended without a fill: the position (the id's anchor) did not move, so the
        # next decision needs a new epoch to get a new id.
        state.epoch[ev.symbol] = state.epoch.get(ev.symbol, 0) + 1
    mark_dirty(state, ev.symbol, now_mono)
    return True


def throttle_wait_ns(state: GatingState, symbol: str, clock_ns: int, interval_ns: int) -> int:
    """0: evaluate now; otherwise how long (message clock) until the window ends."""
    last = state.last_eval_ns.get(symbol)
    if last is None or clock_ns - last >= interval_ns:
        return 0
    return min(interval_ns - (clock_ns - last), interval_ns)


def mark_evaluated(state: GatingState, symbol: str, clock_ns: int) -> None:
    state.last_eval_ns[symbol] = clock_ns


def blocked(state: GatingState, symbol: str, clock_ns: int, *, every_tick: bool) -> str | None:
    """Why no decision may be taken for ``symbol`` now (a counter name), or None.
    ``every_tick`` (benchmarks) ignores the reject backoff."""
    if not state.synced:
        return "skip_not_synced"
    if symbol in state.dirty:
        return "skip_position_refresh"
    if not every_tick and clock_ns < state.backoff_until.get(symbol, 0):
        return "skip_backoff"
    return None


def begin_intent(state: GatingState, symbol: str, intent_id: str) -> None:
    state.pending[symbol] = intent_id


def end_intent(state: GatingState, symbol: str, intent_id: str) -> None:
    """Risk answered (or the request gave up); a newer pending intent is kept."""
    if state.pending.get(symbol) == intent_id:
        del state.pending[symbol]


def approved(state: GatingState, symbol: str, cid: str, now_mono: int) -> None:
    """Risk passed it to the executor: it is open until an event or snapshot says not."""
    state.open_orders.setdefault(symbol, {}).setdefault(cid, now_mono)


def rejected(state: GatingState, symbol: str, clock_ns: int, backoff_ns: int) -> None:
    """Back off on the message clock, from ``clock_ns`` (the rejected intent's clock),
    so a replay skips exactly the books the recorded session skipped."""
    state.backoff_until[symbol] = clock_ns + backoff_ns


def duplicate(state: GatingState, symbol: str, now_mono: int) -> bool:
    """The executor already knows the intent id. With no order of ours open it ended
    (possibly before a restart reset our epoch): move on to a new id and refresh the
    position (True). With one open it is simply still working (False)."""
    if state.open_orders.get(symbol):
        return False
    state.epoch[symbol] = state.epoch.get(symbol, 0) + 1
    mark_dirty(state, symbol, now_mono)
    return True
