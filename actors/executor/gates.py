"""What may happen now: the gates (config, live arming) and the latches (kill switch,
safety latch, pause) that decide whether the executor may read from or write to the venue.

The executor's DB is the one writer of the latches. Everyone else (supervisor, CLI,
reconciler) *requests* a change with ``SetLatch`` and *listens*: a change is announced
(the portfolio snapshot, at once) only after it is durable. Controls on the bus are not
latch writes: a ``kill_switch_on`` broadcast is ignored here.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from actors.executor.state import SUBMIT, ExecState
from bus.messages import Latches
from shared.fsm import State, StateMachine


class Gates:
    def __init__(self, s: ExecState, fsm: StateMachine) -> None:
        self.s = s
        self.fsm = fsm
        self.latches: dict[str, tuple[bool, str]] = {}
        self.set_at: dict[str, float] = {}  # when each latch that is set was set (wall s)
        # Announces a durable change (wired to the snapshot publisher).
        self.on_change: Callable[[], None] = lambda: None
        # Halts: conditions of the moment, in memory only (they must work when the disk
        # does not): "exchange" (unreachable) and "disk" (a DB write failed). Each stops
        # submits with its name as the reason; they lift themselves when the condition
        # ends (exchange) or need a restart (disk).
        self.halts: dict[str, str] = {}

    def load(self) -> None:
        self.latches = self.s.db.latches()
        self.set_at = self.s.db.latch_set_times()

    def latch(self, name: str) -> bool:
        return self.latches.get(name, (False, ""))[0]

    def kill_switch_on(self) -> bool:
        return self.s.cfg.gates.kill_switch or self.latch("kill_switch")

    def read_block(self) -> str | None:
        """Why the venue may not be read now (None: it may)."""
        if self.s.venue.read_block is not None:
            return self.s.venue.read_block
        if self.s.mode == "live" and self.s.cfg.live_arming_problems():
            return "live_not_armed"
        return None

    def write_block(self, action: str) -> str | None:
        """Why a venue write may not happen now (None: allowed). Checked again right
        before every write, whatever was checked when the request came in."""
        cfg = self.s.cfg
        if self.s.mode == "live" and (problems := cfg.live_arming_problems()):
            return "live_not_armed:" + "; ".join(problems)
        if cfg.gates.safe_mode:
            return "safe_mode"
        if action == SUBMIT:
            for name in self.halts:
                return name
            if self.kill_switch_on():
                return "kill_switch"
            if self.latch("safety_latch"):
                return "safety_latch"
            if self.latch("paused"):
                return "paused"
        return None

    def set_latch(self, latch: str, value: bool, reason: str) -> None:
        """Durable first, then announced (the portfolio snapshot, at once)."""
        self.s.db.set_latch(latch, value, reason, self.s.now())
        self.load()
        logger.warning("executor: latch {} = {} ({})", latch, value, reason)
        self.sync_fsm(f"latch {latch}={value}")
        self.s.dirty = True
        self.on_change()

    def halt(self, name: str, detail: str) -> bool:
        """True when this is a new halt (the caller says so once)."""
        new = name not in self.halts
        self.halts[name] = detail
        if new:
            logger.error("executor: halted ({}): {}", name, detail)
            self.sync_fsm(f"halt {name}: {detail}")
            self.s.dirty = True
        return new

    def lift(self, name: str, why: str) -> bool:
        if self.halts.pop(name, None) is None:
            return False
        logger.warning("executor: halt {} lifted: {}", name, why)
        self.sync_fsm(f"{name} halt lifted: {why}")
        self.s.dirty = True
        return True

    def halt_reason(self) -> str:
        return "; ".join(f"{name}: {detail}" for name, detail in self.halts.items())

    def sync_fsm(self, trigger: str) -> None:
        if self.s.recovering or self.halts:
            target = State.DEGRADED_RECOVERY
        elif self.kill_switch_on() or self.latch("safety_latch") or self.latch("paused"):
            target = State.PAUSED_SAFETY
        else:
            target = State.READY
        if self.fsm.state != target and self.fsm.can(target):
            self.fsm.to(target, trigger)

    def view(self) -> Latches:
        kill, kr = self.latches.get("kill_switch", (False, ""))
        safety, sr = self.latches.get("safety_latch", (False, ""))
        paused, pr = self.latches.get("paused", (False, ""))
        # Only the reasons of latches that are set: a cleared latch keeps its last reason
        # in the DB (the audit), but status must not show it as if it still held.
        return Latches(kill_switch=kill or self.s.cfg.gates.kill_switch, safety_latch=safety,
                       paused=paused, reason=self.reason(kr if kill else "",
                                                         sr if safety else "",
                                                         pr if paused else ""))

    def reason(self, *reasons: str) -> str:
        parts = [r for r in reasons if r]
        if self.s.cfg.gates.kill_switch:
            parts.insert(0, "config gates.kill_switch")
        return "; ".join(parts)
