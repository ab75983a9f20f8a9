"""The overall trading state, derived and never stored: a pure function of what the
supervisor knows (no I/O, no clock), so that it is tested over every combination.

``TRADING`` only when every condition for placing an order holds *and is known to
hold*: an input that is unknown (an executor not heard from yet, a recorder that
never said it records) counts as the failing value. Each blocking condition adds one
reason, named by its source, so an operator reads why at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TradingStateName = Literal["TRADING", "HALTED"]
DRY_RUN_NOTE = "mode:dry-run (simulated fills only)"
SLOW_HOP_NOTE = "warn:bus:slow hop "


@dataclass(frozen=True)
class ActorView:
    name: str
    state: str  # what status shows: READY, BACKOFF, GAVE_UP, STOPPED, DEGRADED_RECOVERY...
    up: bool  # running and READY (heartbeating, or probed over HTTP)
    # Off the trading path (alerts, dashboard): its being down is noted, never halts.
    critical: bool = True


@dataclass(frozen=True)
class TradingInputs:
    mode: str  # dry-run | paper | live
    actors: tuple[ActorView, ...]
    # Gates from the config and live arming.
    config_kill_switch: bool = False
    safe_mode: bool = False
    live_problems: tuple[str, ...] = ()
    # Latches as the executor's DB holds them (its heartbeat); None: not known.
    kill_switch: bool | None = None
    safety_latch: bool | None = None
    paused: bool | None = None
    # Latches the supervisor wrote while the executor was unreachable, not yet applied.
    pending_latches: tuple[str, ...] = ()
    # The executor's view of the exchange; None: not known (not reported yet).
    exchange_reachable: bool | None = None
    exchange_reason: str = ""
    submits_failing: bool = False
    submit_reason: str = ""
    # Market data: symbols whose feed is stale, and whether any status was heard at all.
    stale_symbols: tuple[str, ...] = ()
    feed_heard: bool = True
    # The recorder: required by config? recording now? (None: not known.)
    recorder_required: bool = True
    recorder_recording: bool | None = None
    recorder_reason: str = ""
    # Bus health: hops whose recent p99 is over their configured bound (descriptions).
    # A warning, never a halt: a slow hop delays orders but places none wrongly, and the
    # gates that matter when it gets bad (stale data, submits failing) halt on their own.
    slow_hops: tuple[str, ...] = ()


@dataclass(frozen=True)
class TradingState:
    state: TradingStateName
    reasons: tuple[str, ...]  # notes (dry-run, observers down) first; they do not block

    @property
    def trading(self) -> bool:
        return self.state == "TRADING"


def _latch(name: str, value: bool | None) -> str | None:
    # Exact codes (operators and scripts match them); the latch's reason is in status.
    if value is None:
        return f"gate:{name}:unknown (executor not heard)"
    return f"gate:{name}" if value else None


def derive_trading_state(x: TradingInputs) -> TradingState:
    blocking: list[str] = []
    if x.config_kill_switch and x.kill_switch is not True:
        blocking.append("gate:kill_switch")
    if x.safe_mode:
        blocking.append("gate:safe_mode")
    if x.mode == "live" and x.live_problems:
        blocking.append("gate:live_not_armed")
    names = {a.name for a in x.actors}
    if "executor" not in names:
        blocking.append("actor:executor:not in this pipeline")
    for name, value in (("kill_switch", x.kill_switch), ("safety_latch", x.safety_latch),
                        ("paused", x.paused)):
        if (why := _latch(name, value)) is not None:
            blocking.append(why)
    for latch in x.pending_latches:
        blocking.append(f"gate:{latch} (pending-persist)")
    if x.mode != "dry-run":  # dry-run makes no exchange call
        if x.exchange_reachable is False:
            blocking.append("exchange:unreachable" + (f" ({x.exchange_reason})"
                                                      if x.exchange_reason else ""))
    if x.submits_failing:  # the executor's own halt (exchange unreachable, disk full)
        blocking.append("executor:halted" + (f" ({x.submit_reason})" if x.submit_reason
                                             else ""))
    if not x.feed_heard:
        blocking.append("market_data:no status yet")
    if x.stale_symbols:
        blocking.append("market_data:stale " + ",".join(sorted(x.stale_symbols)))
    if x.recorder_required:
        if "recorder" not in names:
            blocking.append("recorder:not running (recorder.required)")
        elif x.recorder_recording is False:
            blocking.append("recorder:NOT RECORDING" + (f" ({x.recorder_reason})"
                                                        if x.recorder_reason else ""))
    notes = [DRY_RUN_NOTE] if x.mode == "dry-run" else []
    notes += [f"{SLOW_HOP_NOTE}{hop}" for hop in x.slow_hops]
    for actor in x.actors:
        if not actor.up and actor.critical:
            blocking.append(f"actor:{actor.name}:{actor.state}")
        elif not actor.up:
            notes.append(f"observer:{actor.name}:{actor.state}")
    return TradingState("HALTED" if blocking else "TRADING", tuple(notes + blocking))
