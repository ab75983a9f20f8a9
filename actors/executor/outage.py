"""Exchange outages: seen on any venue call (venues/watched.py), handled here.

An unreachable answer (refused, timeout, lost connection, 5xx) halts submits at once
(gate "exchange", the executor DEGRADED with "exchange unreachable" in its state and
heartbeat), records one incident per outage, and pauses drift checks (a reconcile
answers ok with a "paused" detail instead of failing, so no latch is set for an outage
the executor already handles). While halted, the poll loop asks whether the venue is
back every ``order_poll_interval_s``, and the answer is a full reconcile: only when one
succeeds is the halt lifted and trading resumes, without an operator. Sends that were
in flight are resolved by their keys (an ambiguous one is probed, never re-sent).
"""

from __future__ import annotations

from actors.executor.gates import Gates
from actors.executor.incidents import Incidents
from actors.executor.state import ExecState
from shared.btcturk.errors import BtcTurkError

HALT = "exchange"
# Nothing heard from the venue for this long: the poll loop asks (a cheap read), so an
# outage is seen even while the private socket keeps REST polling slow.
LIVENESS_S = 2.0


class Outage:
    def __init__(self, s: ExecState, gates: Gates, incidents: Incidents) -> None:
        self.s = s
        self.gates = gates
        self.incidents = incidents
        self.last_ok_mono = s.mono()
        self.started = 0.0

    @property
    def active(self) -> bool:
        return HALT in self.gates.halts

    def ok(self) -> None:
        self.last_ok_mono = self.s.mono()

    def unreachable(self, what: str, exc: BtcTurkError) -> None:
        self.s.counters["venue_unreachable"] += 1
        detail = f"exchange unreachable ({what}: {exc.kind})"
        if self.gates.halt(HALT, detail):
            self.started = self.s.now()
            try:
                self.incidents.record("exchange_unreachable",
                                      f"{self.s.cfg.rest_url}: {what}: {exc}")
            except Exception:  # noqa: BLE001 - the halt is what matters; it is in memory
                self.s.counters["incident_write_errors"] += 1

    def back(self) -> None:
        took = self.s.now() - self.started
        if self.gates.lift(HALT, f"exchange back after {took:.1f} s; reconciled"):
            self.s.counters["outages_ended"] += 1
