"""Which bus messages are alerts (pure: messages in, events out).

Edge-triggered where the state is a flag (latches, the exchange's reachability, an
actor given up): one event when it changes, none while it stays. Level conditions
(drift, the daily-loss limit) alert when they appear and again at most every
``repeat_s`` while they persist, so a stuck condition is neither silent nor a flood.

Sources, all on the bus (the alerts actor needs nothing else):
- latches: the executor's heartbeat ``info`` (kill_switch, safety_latch, paused and
  latch_reason): the executor is their one writer and announces them once durable;
- an actor given up: the supervisor's ``state.supervisor`` transition to ``GAVE_UP``;
- the exchange unreachable: an actor's transition into a DEGRADED (or ERROR_RETRYABLE)
  state whose trigger names the exchange or a connection failure, and back out of it;
  and, independent of any actor, the alerts actor's own probe of the exchange's public
  server time (``Reachability``: ``exchange_probe_failures`` failures in a row); and the
  executor's heartbeat ``halt`` (``exchange: ...`` → unreachable, anything else such as
  ``disk: ...`` → trading_halted), on each change;
- drift: a ``reconcile.report`` with ``drift_found > 0``;
- the daily-loss limit: a risk decision carrying ``limit:daily_loss``;
- fills (``alerts.on_fill``): every ``fill.*``.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from bus.messages import (
    ExecutorInfo,
    Fill,
    Heartbeat,
    ReconcileReport,
    RiskDecision,
    StateTransition,
)

Severity = Literal["critical", "warning", "info"]
LATCHES = ("kill_switch", "safety_latch", "paused")
_EXCHANGE_TRIGGER = re.compile(r"(?i)exchange|unreachable|connect|timeout|\b5\d\d\b")


class AlertEvent(msgspec.Struct, frozen=True, kw_only=True):
    kind: str  # latch_set, latch_cleared, kill_switch_on, kill_switch_off, actor_gave_up,
    # exchange_unreachable, exchange_reachable, trading_halted, trading_resumed, drift,
    # daily_loss_limit, fill
    severity: Severity
    summary: str
    at: float  # unix seconds
    detail: dict[str, str] = {}


class Detector:
    def __init__(self, *, on_fill: bool, repeat_s: float) -> None:
        self.on_fill = on_fill
        self.repeat_s = repeat_s
        self.latches: dict[str, bool] | None = None  # None until the first heartbeat
        self.degraded: dict[str, bool] = {}
        self.halt: str | None = None  # the executor's halt reason; None until first heard
        self._last_level: dict[str, float] = {}

    def observe(self, body: object, now: float) -> list[AlertEvent]:
        match body:
            case Heartbeat(actor="executor"):
                return self._latches(body, now)
            case StateTransition():
                return self._transition(body, now)
            case ReconcileReport() if body.drift_found > 0:
                return self._level("drift", now, "warning",
                                   f"balance/order drift: {body.drift_found} found, "
                                   f"{body.drift_fixed} fixed",
                                   {"details": "; ".join(body.details)[:1000]})
            case RiskDecision() if "limit:daily_loss" in body.reasons:
                return self._level("daily_loss_limit", now, "critical",
                                   f"daily loss limit hit: risk rejects new entries "
                                   f"({body.symbol})", {"symbol": body.symbol})
            case Fill() if self.on_fill:
                return [AlertEvent(kind="fill", severity="info", at=now,
                                   summary=f"fill {body.symbol} {body.side} {body.quantity} @ "
                                           f"{body.price} (fee {body.fee} {body.fee_asset})",
                                   detail={"trade_id": body.trade_id,
                                           "client_order_id": body.client_order_id})]
        return []

    def _latches(self, hb: Heartbeat, now: float) -> list[AlertEvent]:
        info = hb.info
        if not isinstance(info, ExecutorInfo):
            return []
        out = self._halt(info.halt, now)
        seen: dict[str, bool] = {n: getattr(info, n) for n in LATCHES}
        reason = info.latch_reason
        before, self.latches = self.latches, {**(self.latches or {}), **seen}
        for name, value in seen.items():
            was = None if before is None else before.get(name)
            if was == value or (was is None and not value):
                continue  # unchanged, or clear when first seen: nothing to say
            if name == "kill_switch":
                kind, sev = ("kill_switch_on", "critical") if value else ("kill_switch_off",
                                                                          "info")
            else:
                kind, sev = ("latch_set", "critical") if value else ("latch_cleared", "info")
            state = "set" if value else "cleared"
            out.append(AlertEvent(kind=kind, severity=sev, at=now,
                                  summary=f"{name} {state}" + (f": {reason}" if value and reason
                                                               else ""),
                                  detail={"latch": name, "reason": reason}))
        return out

    def _halt(self, halt: str, now: float) -> list[AlertEvent]:
        before, self.halt = self.halt, halt
        return _halt_event(before, halt, now)

    def _transition(self, t: StateTransition, now: float) -> list[AlertEvent]:
        if t.to_state == "GAVE_UP":
            return [AlertEvent(kind="actor_gave_up", severity="critical", at=now,
                               summary=f"supervisor gave up on {t.actor}: {t.trigger}",
                               detail={"actor": t.actor})]
        entering = _troubled(t.to_state) and bool(_EXCHANGE_TRIGGER.search(t.trigger))
        if entering and not self.degraded.get(t.actor):
            self.degraded[t.actor] = True
            return [AlertEvent(kind="exchange_unreachable", severity="critical", at=now,
                               summary=f"exchange unreachable ({t.actor}: {t.trigger})",
                               detail={"actor": t.actor, "state": t.to_state})]
        if self.degraded.get(t.actor) and not _troubled(t.to_state):
            self.degraded[t.actor] = False
            return [AlertEvent(kind="exchange_reachable", severity="info", at=now,
                               summary=f"exchange reachable again ({t.actor} {t.to_state})",
                               detail={"actor": t.actor, "state": t.to_state})]
        return []

    def _level(self, kind: str, now: float, severity: Severity, summary: str,
               detail: dict[str, str]) -> list[AlertEvent]:
        last = self._last_level.get(kind)
        if last is not None and now - last < self.repeat_s:
            return []
        self._last_level[kind] = now
        return [AlertEvent(kind=kind, severity=severity, at=now, summary=summary,
                           detail=detail)]


def _troubled(state: str) -> bool:
    return state.startswith("DEGRADED") or state == "ERROR_RETRYABLE"


class Reachability:
    """The alerts actor's own view of the exchange: ``threshold`` failed probes in a row
    make it unreachable (one lost packet is not an outage), one success reachable again."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.failures = 0
        self.unreachable = False

    def observe(self, error: str | None, now: float, url: str) -> list[AlertEvent]:
        if error is None:
            self.failures = 0
            if not self.unreachable:
                return []
            self.unreachable = False
            return [AlertEvent(kind="exchange_reachable", severity="info", at=now,
                               summary=f"exchange reachable again ({url})",
                               detail={"source": "alerts probe"})]
        self.failures += 1
        if self.unreachable or self.failures < self.threshold:
            return []
        self.unreachable = True
        return [AlertEvent(kind="exchange_unreachable", severity="critical", at=now,
                           summary=f"exchange unreachable: {self.failures} probes of {url} "
                                   f"failed, last: {error}",
                           detail={"source": "alerts probe", "error": error})]


def _halt_kind(reason: str, halted: bool) -> str:
    if reason.startswith("exchange"):
        return "exchange_unreachable" if halted else "exchange_reachable"
    return "trading_halted" if halted else "trading_resumed"


def _halt_event(before: str | None, after: str, now: float) -> list[AlertEvent]:
    """The executor's ``halt`` (why submits stop: ``exchange: ...``, ``disk: ...``), on
    each change; a halt already on when first heard is announced once."""
    if before == after or (before is None and not after):
        return []
    if after:
        return [AlertEvent(kind=_halt_kind(after, True), severity="critical", at=now,
                           summary=f"executor halted submits: {after}",
                           detail={"source": "executor", "halt": after})]
    return [AlertEvent(kind=_halt_kind(before or "", False), severity="info", at=now,
                       summary=f"executor resumed submits (was: {before})",
                       detail={"source": "executor", "was": before or ""})]
