"""The derived trading state (actors/supervisor/trading_state.py): a property test over
random combinations of every input, and the cases an operator meets."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from actors.supervisor.trading_state import (
    DRY_RUN_NOTE,
    ActorView,
    TradingInputs,
    derive_trading_state,
)
from shared.actorspec import ACTOR_NAMES

OBSERVERS = ("alerts", "dashboard")
STATES = ("READY", "STARTING", "BACKOFF", "GAVE_UP", "STOPPED", "DEGRADED_RECOVERY")


def actor_views() -> st.SearchStrategy[tuple[ActorView, ...]]:
    def build(present: list[bool], ups: list[bool], states: list[str]) -> tuple[ActorView, ...]:
        return tuple(ActorView(n, "READY" if up else s, up, critical=n not in OBSERVERS)
                     for n, here, up, s in zip(ACTOR_NAMES, present, ups, states, strict=True)
                     if here)
    k = len(ACTOR_NAMES)
    return st.builds(build, st.lists(st.booleans(), min_size=k, max_size=k),
                     st.lists(st.booleans(), min_size=k, max_size=k),
                     st.lists(st.sampled_from(STATES), min_size=k, max_size=k))


maybe = st.one_of(st.none(), st.booleans())
inputs = st.builds(
    TradingInputs,
    mode=st.sampled_from(["dry-run", "paper", "live"]),
    actors=actor_views(),
    config_kill_switch=st.booleans(),
    safe_mode=st.booleans(),
    live_problems=st.sampled_from([(), ("gates.live_trading is not true",)]),
    kill_switch=maybe,
    safety_latch=maybe,
    paused=maybe,
    pending_latches=st.sampled_from([(), ("kill_switch",)]),
    exchange_reachable=maybe,
    exchange_reason=st.sampled_from(["", "connection refused"]),
    submits_failing=st.booleans(),
    stale_symbols=st.sampled_from([(), ("BTCTRY",), ("ETHTRY", "BTCTRY")]),
    feed_heard=st.booleans(),
    recorder_required=st.booleans(),
    recorder_recording=maybe,
)


def must_halt(x: TradingInputs) -> bool:
    """The rule, written out independently of the implementation: any of these alone
    forbids TRADING."""
    names = {a.name for a in x.actors}
    trades_on_exchange = x.mode != "dry-run"
    return any([
        x.config_kill_switch,
        x.safe_mode,
        x.mode == "live" and bool(x.live_problems),
        x.kill_switch is not False,  # set, or not known
        x.safety_latch is not False,
        x.paused is not False,
        bool(x.pending_latches),
        trades_on_exchange and x.exchange_reachable is False,
        x.submits_failing,
        bool(x.stale_symbols),
        not x.feed_heard,
        "executor" not in names,
        x.recorder_required and "recorder" not in names,
        x.recorder_required and x.recorder_recording is False,
        any(not a.up and a.critical for a in x.actors),
    ])


@given(inputs)
def test_trading_exactly_when_nothing_forbids_it(x: TradingInputs) -> None:
    out = derive_trading_state(x)
    assert out.trading == (not must_halt(x))
    blocking = [r for r in out.reasons
                if r != DRY_RUN_NOTE and not r.startswith("observer:")]
    assert bool(blocking) == (out.state == "HALTED")  # a halt always says why
    assert len(set(out.reasons)) == len(out.reasons)
    assert (DRY_RUN_NOTE in out.reasons) == (x.mode == "dry-run")


@given(inputs, st.sampled_from([n for n in ACTOR_NAMES if n not in OBSERVERS]))
def test_an_actor_down_is_named_and_halts(x: TradingInputs, name: str) -> None:
    actors = tuple(a for a in x.actors if a.name != name) + (ActorView(name, "BACKOFF", False),)
    out = derive_trading_state(replace(x, actors=actors))
    assert out.state == "HALTED"
    assert f"actor:{name}:BACKOFF" in out.reasons


@given(inputs)
def test_adding_a_failure_never_resumes_trading(x: TradingInputs) -> None:
    for worse in (replace(x, paused=True), replace(x, exchange_reachable=False, mode="paper"),
                  replace(x, recorder_recording=False, recorder_required=True),
                  replace(x, stale_symbols=("BTCTRY",)), replace(x, submits_failing=True,
                                                                 mode="live")):
        assert not derive_trading_state(worse).trading


def healthy(**changes: object) -> TradingInputs:
    base = TradingInputs(mode="paper", actors=tuple(ActorView(n, "READY", True)
                                                    for n in ACTOR_NAMES),
                         kill_switch=False, safety_latch=False, paused=False,
                         exchange_reachable=True, recorder_recording=True)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_healthy_paper_pipeline_trades() -> None:
    assert derive_trading_state(healthy()) == derive_trading_state(healthy())
    assert derive_trading_state(healthy()).state == "TRADING"
    assert derive_trading_state(healthy()).reasons == ()


def test_reasons_name_the_cause() -> None:
    out = derive_trading_state(healthy(exchange_reachable=False,
                                       exchange_reason="connection refused", paused=True))
    assert out.reasons == ("gate:paused", "exchange:unreachable (connection refused)")
    unknown = derive_trading_state(healthy(kill_switch=None))
    assert unknown.reasons == ("gate:kill_switch:unknown (executor not heard)",)
    rec = derive_trading_state(healthy(recorder_recording=False, recorder_reason="disk full"))
    assert rec.reasons == ("recorder:NOT RECORDING (disk full)",)
    optional = derive_trading_state(healthy(recorder_recording=False, recorder_required=False))
    assert optional.trading


def test_an_observer_down_is_noted_but_does_not_halt() -> None:
    actors = healthy().actors + (ActorView("alerts", "BACKOFF", False, critical=False),)
    out = derive_trading_state(healthy(actors=actors))
    assert out.trading and out.reasons == ("observer:alerts:BACKOFF",)


def test_dry_run_ignores_the_exchange_but_notes_the_mode() -> None:
    out = derive_trading_state(healthy(mode="dry-run", exchange_reachable=False))
    assert out.trading and out.reasons == (DRY_RUN_NOTE,)
