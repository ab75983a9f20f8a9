"""The idempotency state machine of one key (pure: no I/O, time is a parameter).

A key is one action on the exchange: ``("submit", client_order_id)`` or
``("cancel", client_order_id)``. Its *status* is what the DB persists:

- PENDING   reserved; not known to have reached the exchange
- COMMITTED the exchange has it (we hold its order id)
- UNKNOWN   a send had an ambiguous outcome; being probed
- FAILED    it provably did not take effect (or the settle window passed without a
            trace of it); terminal: the key is never sent again, a new decision needs
            a new intent id

Its *phase* is what this process knows about sends, kept in memory only:

- UNSENT      reserved by this incarnation, no send started
- RETRY_WAIT  every send so far provably never reached the exchange (RetryableError)
- IN_FLIGHT   a send is outstanding
- MAYBE_SENT  a send may have reached the exchange: only probing may resolve it
- DONE        terminal status

The one rule that gives "never twice": a send may start only from UNSENT or
RETRY_WAIT. A restart turns every non-terminal key into MAYBE_SENT (a send may have
been in flight when the process died), so a key inherited from a previous
incarnation is only ever probed, never sent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class KeyStatus(StrEnum):
    PENDING = "PENDING"
    COMMITTED = "COMMITTED"
    UNKNOWN = "UNKNOWN"
    FAILED = "FAILED"


class Phase(StrEnum):
    UNSENT = "unsent"
    RETRY_WAIT = "retry_wait"
    IN_FLIGHT = "in_flight"
    MAYBE_SENT = "maybe_sent"
    DONE = "done"


TERMINAL_STATUSES = frozenset({KeyStatus.COMMITTED, KeyStatus.FAILED})
SENDABLE_PHASES = frozenset({Phase.UNSENT, Phase.RETRY_WAIT})


class IllegalKeyEvent(RuntimeError):
    """An event that cannot happen in the key's state: a bug in the caller."""


@dataclass(frozen=True, slots=True)
class Policy:
    settle_window_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_send_attempts: int = 3

    def backoff(self, n: int) -> float:
        """Delay before the (n+1)-th retry/probe: exponential with a cap."""
        return min(self.backoff_max_s, self.backoff_initial_s * (2 ** min(n, 30)))


@dataclass(frozen=True, slots=True)
class Key:
    status: KeyStatus
    phase: Phase
    attempts: int = 0  # sends started
    probes: int = 0
    settle_from: float = 0.0  # a not-found probe decides FAILED only after settle_from+window
    next_at: float = 0.0  # earliest time of the next send (RETRY_WAIT) or probe (MAYBE_SENT)
    reason: str = ""
    exchange_order_id: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendStarted:
    now: float


@dataclass(frozen=True, slots=True)
class SendSucceeded:
    now: float
    exchange_order_id: int | None


@dataclass(frozen=True, slots=True)
class SendRejected:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class SendRetryable:
    now: float
    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class SendAmbiguous:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class GateBlocked:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class ProbeFound:
    now: float
    exchange_order_id: int | None


@dataclass(frozen=True, slots=True)
class ProbeNotFound:
    now: float


@dataclass(frozen=True, slots=True)
class ProbeFailed:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class Restarted:
    now: float


@dataclass(frozen=True, slots=True)
class AdoptedLate:
    """The exchange shows an order for a key we had already decided FAILED."""

    now: float
    exchange_order_id: int | None


Event = (
    SendStarted | SendSucceeded | SendRejected | SendRetryable | SendAmbiguous | GateBlocked
    | ProbeFound | ProbeNotFound | ProbeFailed | Restarted | AdoptedLate
)


def reserve(now: float) -> Key:
    return Key(KeyStatus.PENDING, Phase.UNSENT, settle_from=now, next_at=now)


def loaded(status: KeyStatus, attempts: int, reason: str, exchange_order_id: int | None,
           settle_from: float, now: float) -> Key:
    """A key read back from the DB at start: its send history is unknown."""
    if status in TERMINAL_STATUSES:
        return Key(status, Phase.DONE, attempts, 0, settle_from, now, reason, exchange_order_id)
    key = Key(status, Phase.IN_FLIGHT, attempts, 0, settle_from, now, reason, exchange_order_id)
    return apply(key, Restarted(now), Policy())


def can_send(key: Key, now: float) -> bool:
    return (key.status == KeyStatus.PENDING and key.phase in SENDABLE_PHASES
            and now >= key.next_at)


def needs_probe(key: Key, now: float) -> bool:
    return key.phase == Phase.MAYBE_SENT and not key.terminal and now >= key.next_at


def _require(key: Key, ok: bool, event: Event) -> None:
    if not ok:
        raise IllegalKeyEvent(f"{type(event).__name__} in {key.status}/{key.phase}")


def apply(key: Key, event: Event, policy: Policy) -> Key:  # noqa: C901 - one flat table
    """The transition table. Raises IllegalKeyEvent for an event that cannot happen."""
    match event:
        case SendStarted(now):
            _require(key, key.status == KeyStatus.PENDING and key.phase in SENDABLE_PHASES,
                     event)
            return replace(key, phase=Phase.IN_FLIGHT, attempts=key.attempts + 1, next_at=now)
        case SendSucceeded(_, oid):
            _require(key, key.phase == Phase.IN_FLIGHT, event)
            return replace(key, status=KeyStatus.COMMITTED, phase=Phase.DONE,
                           exchange_order_id=oid, reason="")
        case SendRejected(_, reason):
            _require(key, key.phase == Phase.IN_FLIGHT, event)
            return replace(key, status=KeyStatus.FAILED, phase=Phase.DONE, reason=reason)
        case SendRetryable(now, reason, retry_after):
            _require(key, key.phase == Phase.IN_FLIGHT, event)
            if key.attempts >= policy.max_send_attempts:
                return replace(key, status=KeyStatus.FAILED, phase=Phase.DONE,
                               reason=f"retries_exhausted:{reason}")
            delay = max(retry_after or 0.0, policy.backoff(key.attempts - 1))
            return replace(key, status=KeyStatus.PENDING, phase=Phase.RETRY_WAIT,
                           next_at=now + delay, reason=reason)
        case SendAmbiguous(now, reason):
            _require(key, key.phase == Phase.IN_FLIGHT, event)
            return replace(key, status=KeyStatus.UNKNOWN, phase=Phase.MAYBE_SENT,
                           settle_from=now, next_at=now + policy.backoff_initial_s,
                           reason=reason)
        case GateBlocked(_, reason):
            _require(key, key.status == KeyStatus.PENDING and key.phase in SENDABLE_PHASES,
                     event)
            return replace(key, status=KeyStatus.FAILED, phase=Phase.DONE,
                           reason=f"blocked:{reason}")
        case ProbeFound(_, oid):
            _require(key, key.phase == Phase.MAYBE_SENT and not key.terminal, event)
            return replace(key, status=KeyStatus.COMMITTED, phase=Phase.DONE,
                           exchange_order_id=oid if oid is not None else key.exchange_order_id,
                           reason="probe_found")
        case ProbeNotFound(now):
            _require(key, key.phase == Phase.MAYBE_SENT and not key.terminal, event)
            if now >= key.settle_from + policy.settle_window_s:
                return replace(key, status=KeyStatus.FAILED, phase=Phase.DONE,
                               probes=key.probes + 1, reason="not_found_after_settle")
            return replace(key, probes=key.probes + 1,
                           next_at=min(now + policy.backoff(key.probes),
                                       key.settle_from + policy.settle_window_s))
        case ProbeFailed(now, reason):
            _require(key, key.phase == Phase.MAYBE_SENT and not key.terminal, event)
            return replace(key, probes=key.probes + 1, next_at=now + policy.backoff(key.probes),
                           reason=f"probe_failed:{reason}")
        case Restarted(now):
            if key.terminal:
                return key
            # Whatever happened before the restart, a send may have gone out: probe only.
            # The settle window restarts at least now, because a send of the previous
            # incarnation happened before this moment.
            return replace(key, phase=Phase.MAYBE_SENT, settle_from=max(key.settle_from, now),
                           next_at=now)
        case AdoptedLate(_, oid):
            _require(key, key.status == KeyStatus.FAILED, event)
            return replace(key, status=KeyStatus.COMMITTED, phase=Phase.DONE,
                           exchange_order_id=oid, reason="adopted_late")
    raise IllegalKeyEvent(f"unknown event {event!r}")
