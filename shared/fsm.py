"""The runtime state machine every actor shares (DESIGN section 4).

An explicit transition table; an illegal transition is a bug and raises. Every
transition is logged as a structured record and handed to a listener (the actor
runtime publishes it on ``state.<actor>``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from loguru import logger


class State(StrEnum):
    INIT = "INIT"
    LOCKING = "LOCKING"
    READY = "READY"
    EVALUATING = "EVALUATING"
    EXECUTING = "EXECUTING"
    DEGRADED_RECOVERY = "DEGRADED_RECOVERY"
    PAUSED_DATA = "PAUSED_DATA"
    PAUSED_SAFETY = "PAUSED_SAFETY"
    ERROR_RETRYABLE = "ERROR_RETRYABLE"
    ERROR_FATAL = "ERROR_FATAL"
    STOPPING = "STOPPING"


S = State
_ANY_RUNNING = {S.ERROR_FATAL, S.STOPPING}

TRANSITIONS: dict[State, frozenset[State]] = {
    S.INIT: frozenset({S.LOCKING} | _ANY_RUNNING),
    S.LOCKING: frozenset({S.READY, S.DEGRADED_RECOVERY, S.PAUSED_DATA, S.PAUSED_SAFETY,
                          S.ERROR_RETRYABLE} | _ANY_RUNNING),
    S.READY: frozenset({S.EVALUATING, S.DEGRADED_RECOVERY, S.PAUSED_DATA, S.PAUSED_SAFETY,
                        S.ERROR_RETRYABLE} | _ANY_RUNNING),
    S.EVALUATING: frozenset({S.READY, S.EXECUTING, S.PAUSED_DATA, S.PAUSED_SAFETY,
                             S.ERROR_RETRYABLE} | _ANY_RUNNING),
    S.EXECUTING: frozenset({S.READY, S.PAUSED_SAFETY, S.ERROR_RETRYABLE} | _ANY_RUNNING),
    S.DEGRADED_RECOVERY: frozenset({S.READY, S.PAUSED_DATA, S.PAUSED_SAFETY,
                                    S.ERROR_RETRYABLE} | _ANY_RUNNING),
    S.PAUSED_DATA: frozenset({S.READY, S.PAUSED_SAFETY, S.DEGRADED_RECOVERY,
                              S.ERROR_RETRYABLE} | _ANY_RUNNING),
    S.PAUSED_SAFETY: frozenset({S.READY, S.PAUSED_DATA, S.DEGRADED_RECOVERY,
                                S.ERROR_RETRYABLE} | _ANY_RUNNING),
    S.ERROR_RETRYABLE: frozenset({S.READY, S.DEGRADED_RECOVERY, S.PAUSED_DATA,
                                  S.PAUSED_SAFETY} | _ANY_RUNNING),
    S.ERROR_FATAL: frozenset({S.STOPPING}),
    S.STOPPING: frozenset(),
}

# States in which an actor is up and doing its job (possibly deliberately idle).
OPERATIONAL = frozenset({S.READY, S.EVALUATING, S.EXECUTING, S.DEGRADED_RECOVERY,
                         S.PAUSED_DATA, S.PAUSED_SAFETY})


class IllegalTransition(RuntimeError):
    pass


Listener = Callable[[str, State, State, str], None]


class StateMachine:
    def __init__(self, actor: str, listener: Listener | None = None) -> None:
        self.actor = actor
        self.state = S.INIT
        self.listener = listener
        self.transitions = 0

    def can(self, to: State) -> bool:
        return to in TRANSITIONS[self.state]

    def to(self, new: State, trigger: str) -> None:
        """Move to ``new``; a no-op when already there. Raises on an illegal move."""
        old = self.state
        if new == old:
            return
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{self.actor}: {old} -> {new} ({trigger}) is not allowed")
        self.state = new
        self.transitions += 1
        logger.bind(actor=self.actor, from_state=str(old), to_state=str(new),
                    trigger=trigger).info("state {} -> {} ({})", old, new, trigger)
        if self.listener is not None:
            self.listener(self.actor, old, new, trigger)
