"""Chaos soak (bench/chaos.py): the pure checks, the 60 s CI form and a long soak."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.chaos import (
    TOL_NS,
    Evidence,
    approval_violations,
    duplicate_sends,
    fill_effects,
    sequence_gaps,
    soak,
    violates,
)
from bus.messages import (
    Control,
    Envelope,
    FeedStatus,
    Intent,
    RiskDecision,
)

S = 1_000_000_000


# --- pure checks: each one must catch what it is for -----------------------------------


def test_duplicate_sends_counts_only_outcomes_that_may_have_created_an_order() -> None:
    received = [
        {"newOrderClientId": "a", "outcome": "accepted"},
        {"newOrderClientId": "a", "outcome": "accepted_dropped"},  # a real double send
        {"newOrderClientId": "b", "outcome": "fault:http_500"},  # created nothing
        {"newOrderClientId": "b", "outcome": "accepted"},
        {"newOrderClientId": "c", "outcome": "fault:http_429"},
        {"newOrderClientId": "c", "outcome": "rejected:BALANCE_NOT_ENOUGH"},
        {"newOrderClientId": "d", "outcome": "pending"},
        {"newOrderClientId": "d", "outcome": "accepted"},
    ]
    assert duplicate_sends(received) == {"a": 2, "d": 2}


def test_sequence_gaps_excluded_only_by_an_overlapping_window() -> None:
    envs = [("risk", "d", "i1", 1, 1 * S), ("risk", "d", "i1", 2, 2 * S),
            ("risk", "d", "i1", 5, 3 * S), ("risk", "d", "i1", 9, 10 * S),
            ("risk", "hb", "i1", 1, 1 * S),  # another topic of risk: its own sequence
            ("executor", "o", "e1", 3, 1 * S), ("executor", "o", "e1", 4, 2 * S)]
    # no window: both risk gaps unexplained; the executor stream lost its head
    rep = sequence_gaps(envs, [])
    assert (rep.gaps, rep.unexplained_gaps, rep.records_lost) == (2, 2, 5)
    assert (rep.head_losses, rep.head_records_lost) == (1, 2)
    # a window of another actor does not excuse a gap; the bus's or recorder's does
    assert sequence_gaps(envs, [("strategy", 0, 100 * S)]).unexplained_gaps == 2
    rep = sequence_gaps(envs, [("recorder", int(2.5 * S), int(2.6 * S))])
    assert (rep.unexplained_gaps, rep.records_lost, rep.excluded_lost) == (1, 3, 2)
    rep = sequence_gaps(envs, [("bus", 4 * S, 5 * S), ("risk", 0, int(2.5 * S))])
    assert (rep.unexplained_gaps, rep.excluded_gaps) == (0, 2)


def test_violates_uses_evidence_published_before_the_judgement() -> None:
    stale_at_1 = [Evidence(0, False), Evidence(1 * S, True)]
    assert violates(stale_at_1, judged_from_ns=2 * S, published_ns=2 * S + 1000)
    # published too close to the judgement: risk may not have heard it yet
    assert not violates(stale_at_1, judged_from_ns=1 * S + TOL_NS // 2,
                        published_ns=2 * S)
    # fresh again before the decision was published: risk may have seen that
    back = [*stale_at_1, Evidence(2 * S + 10, False)]
    assert not violates(back, judged_from_ns=2 * S, published_ns=2 * S + 20)
    assert not violates([], judged_from_ns=2 * S, published_ns=3 * S)


def _pkt(wall_ns: int, body: object) -> tuple[int, str, object]:
    env = Envelope(1, "x", "inc", 1, wall_ns, wall_ns)
    return (wall_ns, "t", SimpleNamespace(env=env, body=body))


def _intent(iid: str, created: int) -> Intent:
    return Intent(intent_id=iid, symbol="BTCTRY", side="buy", order_type="limit",
                  price=Decimal(1), quantity=Decimal(1), reason="r", ttl_s=1, strategy="s",
                  created_wall_ns=created)


def _approved(iid: str) -> RiskDecision:
    return RiskDecision(intent_id=iid, symbol="BTCTRY", verdict="approved", reasons=[],
                        side="buy", order_type="limit", price=Decimal(1), quantity=Decimal(1),
                        requested_quantity=Decimal(1))


def test_approval_violations_finds_stale_and_latched_approvals() -> None:
    packets = [
        _pkt(1 * S, FeedStatus(symbol="BTCTRY", fresh=True, source="ws", age_ms=1)),
        _pkt(2 * S, _intent("ok", 2 * S)), _pkt(2 * S + 5, _approved("ok")),
        _pkt(3 * S, FeedStatus(symbol="BTCTRY", fresh=False, source="ws", age_ms=9)),
        _pkt(4 * S, _intent("stale", 4 * S)), _pkt(4 * S + 5, _approved("stale")),
        _pkt(5 * S, FeedStatus(symbol="BTCTRY", fresh=True, source="ws", age_ms=1)),
        _pkt(6 * S, Control(command="kill_switch_on")),
        _pkt(7 * S, _intent("latched", 7 * S)), _pkt(7 * S + 5, _approved("latched")),
        _pkt(8 * S, Control(command="kill_switch_off")),
        _pkt(9 * S, _intent("after", 9 * S)), _pkt(9 * S + 5, _approved("after")),
        _pkt(10 * S + 5, _approved("unrecorded-intent")),
    ]
    rep = approval_violations(packets, blind=[])
    assert rep.approvals == 5 and rep.checked == 4 and rep.unverifiable == 1
    assert [v.split()[2] for v in rep.stale_violations] == ["stale"]
    assert [v.split()[2] for v in rep.latch_violations] == ["latched"]
    # inside a recorder/bus outage the recording cannot prove anything
    assert approval_violations(packets, blind=[(int(3.5 * S), int(4.5 * S))]).unverifiable == 2


def test_fill_effects_moves_base_and_quote_with_fees() -> None:
    from decimal import Decimal as D
    eff = fill_effects([("BTCTRY", "buy", D("100"), D("2"), D("0.2"), "TRY"),
                        ("BTCTRY", "sell", D("110"), D("1"), D("0.11"), "TRY")])
    assert eff["BTC"] == D("1")
    assert eff["TRY"] == D("-200.2") + D("109.89")


# --- the soak itself ---------------------------------------------------------------------


def _assert_soak(tmp_path: Path, duration: float, seed: int) -> None:
    lines, failed, run = soak(tmp_path, duration, seed, log=lambda *_: None)
    print("\n".join(lines))
    assert failed == [], "\n".join(lines)
    assert len(run.received) >= 20, "too few orders for the soak to mean anything"
    assert any(w.kind == "kill" for w in run.windows), "no actor was killed"


@pytest.mark.timeout(150)
def test_chaos_soak_50s(tmp_path: Path) -> None:
    """The CI form: 50 s of real-process chaos, then every invariant (about 65 s in all;
    the seeded in-process simulation, tests/test_simulate.py, explores far more fault
    schedules per second than this can)."""
    _assert_soak(tmp_path, 50.0, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_soak_long(tmp_path: Path) -> None:
    _assert_soak(tmp_path, 600.0, seed=2)
