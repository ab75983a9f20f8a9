"""The idempotency key state machine: unit cases and a hypothesis property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.executor import idempotency as idem
from actors.executor.idempotency import KeyStatus, Phase

P = idem.Policy(settle_window_s=10.0, backoff_initial_s=0.5, backoff_max_s=4.0,
                max_send_attempts=3)


def sent(now: float = 0.0) -> idem.Key:
    return idem.apply(idem.reserve(now), idem.SendStarted(now), P)


def test_happy_path_commits_with_order_id() -> None:
    k = idem.apply(sent(), idem.SendSucceeded(1.0, 42), P)
    assert (k.status, k.phase, k.exchange_order_id, k.attempts) == (
        KeyStatus.COMMITTED, Phase.DONE, 42, 1)


def test_rejection_fails_the_key() -> None:
    k = idem.apply(sent(), idem.SendRejected(1.0, "rejected:min_total"), P)
    assert k.status == KeyStatus.FAILED and k.reason == "rejected:min_total"


def test_retryable_keeps_pending_and_allows_resend_after_backoff() -> None:
    k = idem.apply(sent(0.0), idem.SendRetryable(0.0, "rate_limited", 2.0), P)
    assert k.status == KeyStatus.PENDING and k.phase == Phase.RETRY_WAIT
    assert not idem.can_send(k, 1.0)  # Retry-After honoured
    assert idem.can_send(k, 2.0)


def test_retryable_exhausts_to_failed() -> None:
    k = idem.reserve(0.0)
    for i in range(3):
        k = idem.apply(k, idem.SendStarted(float(i * 10)), P)
        k = idem.apply(k, idem.SendRetryable(float(i * 10), "connect_failed"), P)
    assert k.status == KeyStatus.FAILED and k.reason.startswith("retries_exhausted")


def test_ambiguous_goes_unknown_and_is_never_sent_again() -> None:
    k = idem.apply(sent(), idem.SendAmbiguous(1.0, "timeout"), P)
    assert k.status == KeyStatus.UNKNOWN and k.phase == Phase.MAYBE_SENT
    assert not idem.can_send(k, 1e9)
    with pytest.raises(idem.IllegalKeyEvent):
        idem.apply(k, idem.SendStarted(2.0), P)


def test_not_found_fails_only_after_settle_window() -> None:
    k = idem.apply(sent(), idem.SendAmbiguous(100.0, "timeout"), P)
    k = idem.apply(k, idem.ProbeNotFound(105.0), P)
    assert k.status == KeyStatus.UNKNOWN
    assert k.next_at <= 110.0  # the probe after the window is not postponed past it
    k = idem.apply(k, idem.ProbeNotFound(110.0), P)
    assert k.status == KeyStatus.FAILED and k.reason == "not_found_after_settle"


def test_probe_found_commits_and_adopts_the_exchange_id() -> None:
    k = idem.apply(sent(), idem.SendAmbiguous(1.0, "timeout"), P)
    k = idem.apply(k, idem.ProbeFound(2.0, 77), P)
    assert k.status == KeyStatus.COMMITTED and k.exchange_order_id == 77


def test_restart_turns_pending_into_probe_only_with_settle_from_now() -> None:
    k = idem.loaded(KeyStatus.PENDING, 0, "", None, settle_from=5.0, now=50.0)
    assert k.phase == Phase.MAYBE_SENT and k.settle_from == 50.0
    assert not idem.can_send(k, 1e9) and idem.needs_probe(k, 50.0)


def test_gate_block_only_before_a_send() -> None:
    k = idem.apply(idem.reserve(0.0), idem.GateBlocked(0.0, "kill_switch"), P)
    assert k.status == KeyStatus.FAILED and k.reason == "blocked:kill_switch"
    with pytest.raises(idem.IllegalKeyEvent):
        idem.apply(sent(), idem.GateBlocked(0.0, "kill_switch"), P)


def test_late_adoption_from_failed() -> None:
    k = idem.apply(idem.reserve(0.0), idem.GateBlocked(0.0, "x"), P)
    k = idem.apply(k, idem.AdoptedLate(1.0, 9), P)
    assert k.status == KeyStatus.COMMITTED and k.exchange_order_id == 9


# --- property: never two sends that may have reached the exchange -----------------------

ACTIONS = st.sampled_from(["send", "ok", "reject", "retry", "ambiguous", "block", "found",
                           "notfound", "probefail", "restart", "tick"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ACTIONS, max_size=40))
def test_never_two_effective_sends(actions: list[str]) -> None:
    """Drive the key like the actor would (attempting every event, legal or not). A send
    is 'effective' unless its outcome proved it had no effect (retryable / rejected).
    At most one effective send may ever happen, and none after a terminal status."""
    now = 0.0
    key = idem.reserve(now)
    effective = 0
    outstanding = False  # a send without a known outcome
    terminal_seen = False
    for a in actions:
        now += 1.0
        event: idem.Event = {
            "send": idem.SendStarted(now), "ok": idem.SendSucceeded(now, 1),
            "reject": idem.SendRejected(now, "r"), "retry": idem.SendRetryable(now, "x"),
            "ambiguous": idem.SendAmbiguous(now, "t"), "block": idem.GateBlocked(now, "g"),
            "found": idem.ProbeFound(now, 1), "notfound": idem.ProbeNotFound(now),
            "probefail": idem.ProbeFailed(now, "p"), "restart": idem.Restarted(now),
            "tick": idem.ProbeNotFound(now + 100),
        }[a]
        try:
            new = idem.apply(key, event, P)
        except idem.IllegalKeyEvent:
            continue
        if a == "send":
            assert not terminal_seen, "send after a terminal status"
            assert effective == 0 or not outstanding, "second send while one is outstanding"
            assert effective == 0, "second send after a possibly effective one"
            effective += 1
            outstanding = True
        elif a in ("retry", "reject") and key.phase == Phase.IN_FLIGHT:
            effective -= 1  # proven to have had no effect
            outstanding = False
        elif a in ("ok", "ambiguous"):
            outstanding = False
        if new.terminal:
            terminal_seen = True
        key = new
    assert effective <= 1
