"""Bus health's pure parts: the sliding windows and their quantiles (against a brute-force
computation over the samples in the window), the hop matching, the per-actor flows and
the report's bound flag."""

from __future__ import annotations

import io
import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.supervisor.status import render_bus_health
from actors.supervisor.trading_state import ActorView, TradingInputs, derive_trading_state
from actors.supervisor.watch import CLEAR_HOME, watch
from bus.health import MIN_SAMPLES_TO_FLAG, BusHealth, HopMatcher
from bus.messages import BookSnapshot, Envelope, Intent, OrderEvent, Packet, RiskDecision
from shared import hops
from shared.actorspec import ACTOR_NAMES
from shared.config import ConfigError, load_config
from shared.windows import Window, nearest_rank

S = 1_000_000_000  # ns per second


def brute(samples: list[tuple[float, float]], now_s: float, last_s: int) -> list[float]:
    """The values of the samples a window of ``last_s`` seconds holds at ``now_s``."""
    return sorted(v for t, v in samples if math.floor(now_s) - math.floor(t) < last_s)


def brute_q(values: list[float], q: float) -> float:
    return values[max(0, math.ceil(q * len(values)) - 1)]


# (seconds since the previous sample, value): monotonic times, any spacing, ≤ 8 a second
gaps = st.lists(st.tuples(st.sampled_from([0.0, 0.13, 0.5, 1.0, 2.7, 30.0, 61.0, 400.0]),
                          st.floats(0, 1e4, allow_nan=False)), min_size=1, max_size=300)


@given(gaps, st.sampled_from([1, 5, 60, 900]), st.floats(0, 1000))
@settings(max_examples=300, deadline=None)
def test_window_quantiles_equal_brute_force(steps: list[tuple[float, float]], last_s: int,
                                            later: float) -> None:
    w = Window(900, per_second=8, started_s=1000.0)
    samples: list[tuple[float, float]] = []
    t = 1000.0
    per_second: dict[int, int] = {}
    for dt, v in steps:
        t += dt
        if per_second.get(math.floor(t), 0) >= 8:  # stay under the reservoir: exact regime
            continue
        per_second[math.floor(t)] = per_second.get(math.floor(t), 0) + 1
        w.add(t, v)
        samples.append((t, v))
    now = t + later
    got = w.stats(now, last_s)
    want = brute(samples, now, last_s)
    assert got.count == len(want)
    if not want:
        assert got.p50 is None and got.p99 is None and got.max is None
        return
    assert got.p50 == brute_q(want, 0.50)
    assert got.p99 == brute_q(want, 0.99)
    assert got.max == want[-1]
    assert got.p50 <= got.p99 <= got.max
    assert w.kept() <= 900 * 8


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=2000),
       st.integers(1, 40))
@settings(max_examples=100, deadline=None)
def test_a_busy_second_keeps_a_bounded_sample_and_exact_count_and_max(
        values: list[float], per_second: int) -> None:
    w = Window(60, per_second=per_second)
    for v in values:
        w.add(5.5, v)
    s = w.stats(5.9)
    assert s.count == len(values)
    assert s.max == max(values)
    assert w.kept() == min(per_second, len(values))
    assert s.p50 is not None and s.p99 is not None
    assert min(values) <= s.p50 <= s.p99 <= max(values)


def test_weighted_quantiles_count_a_busy_second_as_it_happened() -> None:
    # Second 0: 1000 samples of 1.0 (8 kept); second 1: 20 samples of 100.0 (8 kept).
    # Unweighted, the 16 kept values would put p50 at 100; the window saw 1020 samples of
    # which 1000 were 1.0 and 20 (more than 1 %) were 100.0.
    w = Window(60, per_second=8)
    for _ in range(1000):
        w.add(0.2, 1.0)
    for _ in range(20):
        w.add(1.2, 100.0)
    s = w.stats(1.5)
    assert s.count == 1020
    assert s.p50 == 1.0
    assert s.p99 == 100.0
    for _ in range(3000):  # 4020 samples: the 20 slow ones are under 1 % now
        w.add(2.3, 1.0)
    assert w.stats(2.5).p99 == 1.0


def test_window_forgets_expired_seconds_and_bounds_memory() -> None:
    w = Window(60, per_second=4)
    for i in range(10_000):
        w.add(i / 10, float(i))  # 10 a second for 1000 s
    assert w.kept() <= 60 * 4
    s = w.stats(999.95, 60)
    assert s.count == 600 and s.max == 9999.0
    assert w.stats(2000.0, 60).count == 0


def test_rate_over_the_time_observed_when_shorter_than_the_window() -> None:
    w = Window(900, started_s=100.0)
    for i in range(20):
        w.add(100.0 + i * 0.5, 1.0)  # 2 a second for 10 s
    assert w.stats(110.0, 60).per_s == pytest.approx(2.0)
    assert w.stats(110.0, 900).per_s == pytest.approx(2.0)


def test_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert nearest_rank(values, 0.5) == 50.0
    assert nearest_rank(values, 0.99) == 99.0
    assert nearest_rank([7.0], 0.99) == 7.0


# --- hops -----------------------------------------------------------------------------

def pkt(body: object, mono_ns: int, source: str = "t", seq: int = 1) -> Packet:
    return Packet(Envelope(1, source, "inc", seq, time.time_ns(), mono_ns), body)  # type: ignore[arg-type]


def book(recv_mono_ns: int) -> BookSnapshot:
    return BookSnapshot(symbol="BTCTRY", bids=[], asks=[], exchange_ts_ms=0,
                        recv_wall_ns=time.time_ns(), recv_mono_ns=recv_mono_ns, age_ms=0,
                        source="ws")


def intent(iid: str, book_mono_ns: int) -> Intent:
    from decimal import Decimal
    return Intent(intent_id=iid, symbol="BTCTRY", side="buy", order_type="limit",
                  price=Decimal("1"), quantity=Decimal("1"), reason="r", ttl_s=5.0,
                  strategy="s", created_wall_ns=time.time_ns(), book_mono_ns=book_mono_ns)


def order(iid: str, cid: str, state: str) -> OrderEvent:
    from decimal import Decimal
    return OrderEvent(client_order_id=cid, intent_id=iid, symbol="BTCTRY", side="buy",
                      state=state, price=Decimal("1"), quantity=Decimal("1"),  # type: ignore[arg-type]
                      filled_quantity=Decimal("0"))


def decision(iid: str) -> RiskDecision:
    from decimal import Decimal
    return RiskDecision(intent_id=iid, symbol="BTCTRY", verdict="approved", reasons=[],
                        side="buy", order_type="limit", price=Decimal("1"),
                        quantity=Decimal("1"), requested_quantity=Decimal("1"))


def test_matcher_names_each_hop_once_in_pipeline_order() -> None:
    seen: list[tuple[str, float]] = []
    m = HopMatcher("x", lambda hop, ms, at: seen.append((hop, ms)))
    ms = 1_000_000
    m.observe(pkt(book(recv_mono_ns=10 * ms), 11 * ms), 12 * ms)
    m.observe(pkt(intent("i1", book_mono_ns=10 * ms), 14 * ms), 15 * ms)
    m.observe(pkt(order("i1", "c1", "PENDING"), 16 * ms), 16 * ms)
    m.observe(pkt(decision("i1"), 17 * ms), 17 * ms)
    m.observe(pkt(order("i1", "c1", "OPEN"), 20 * ms), 20 * ms)
    m.observe(pkt(order("i1", "c1", "FILLED"), 30 * ms), 30 * ms)  # not a second answer
    m.observe(pkt(decision("never-seen"), 40 * ms), 40 * ms)  # no intent: no sample
    pipeline = [(h, v) for h, v in seen if h != "bus→x"]
    assert pipeline == [(hops.MARKETDATA, 1.0), (hops.BOOK_TO_INTENT, 4.0),
                        (hops.INTENT_TO_ORDER, 2.0), (hops.INTENT_TO_DECISION, 3.0),
                        (hops.EXECUTOR_TO_EXCHANGE, 4.0)]
    assert [v for h, v in seen if h == "bus→x"] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_each_intent_round_pairs_with_its_own_decision_in_any_arrival_order() -> None:
    # A rejected intent is repeated under the same id every few seconds, and its
    # announcement can reach us after risk's decision: no decision may pair with the
    # previous round's announcement (seconds that never happened).
    seen: list[float] = []
    m = HopMatcher("x", lambda hop, ms, at: seen.append(ms)
                   if hop == hops.INTENT_TO_DECISION else None)
    ms = 1_000_000
    m.intent("i", 0, 0, 0)
    m.decision("i", 1 * ms, 1 * ms)  # round 1 in order: 1 ms
    m.decision("i", 5001 * ms, 5001 * ms)  # round 2: the decision first…
    m.intent("i", 5000 * ms, 0, 5001 * ms)  # …then its announcement: 1 ms, not 5000
    m.decision("i", 10_001 * ms, 10_001 * ms)  # round 3: decided before announced
    m.intent("i", 10_002 * ms, 0, 10_002 * ms)  # faster than the stamps tell: 0
    m.intent("i", 15_000 * ms, 0, 15_000 * ms)  # round 4: never decided (a duplicate)
    m.intent("i", 20_000 * ms, 0, 20_000 * ms)  # round 5 replaces it
    m.decision("i", 20_003 * ms, 20_003 * ms)
    assert seen == [1.0, 1.0, 0.0, 3.0]


def test_an_intents_first_order_event_is_the_only_intent_to_order_sample() -> None:
    seen: list[tuple[str, float]] = []
    m = HopMatcher("x", lambda hop, ms, at: seen.append((hop, ms)))
    ms = 1_000_000
    m.order("i", "c", "PENDING", 3 * ms, 3 * ms)  # before its intent reached us
    m.intent("i", 2 * ms, 0, 3 * ms)
    m.order("i", "c", "OPEN", 9 * ms, 9 * ms)  # not an intent→order sample
    assert [h for h, _ in seen] == [hops.EXECUTOR_TO_EXCHANGE]


def test_negative_latencies_are_not_samples() -> None:
    seen: list[str] = []
    m = HopMatcher("x", lambda hop, ms, at: seen.append(hop))
    # published before marketdata received it, received here before it was published
    m.observe(pkt(book(recv_mono_ns=50), 10), 5)
    assert seen == []


def test_report_flags_a_hop_over_its_bound_and_counts_gaps_per_actor() -> None:
    h = BusHealth("supervisor", started_mono_ns=100 * S)
    t = 100 * S
    for seq in (1, 2, 3, 6):  # 4 and 5 lost
        t += S // 10
        h.observe("md.book.BTCTRY", pkt(book(recv_mono_ns=t - 2_000_000), t - 1_000_000,
                                        source="marketdata", seq=seq), t)
    doc = h.report(t, {hops.MARKETDATA: 0.5, "bus→supervisor": 5.0}, {
        "marketdata": {"bus_received": 7, "bus_gaps": 1, "bus_lost": 2, "bus_malformed": 3},
        "bus": {"proxy_forwarded": 9, "proxy_dropped": 1, "proxy_dropped_frame_count": 1},
        "recorder": {"records": 4, "flush_lag_ms": 12, "gaps": 0, "lost": 0},
    })
    rows = {r["hop"]: r for r in doc["hops"]}
    md = rows[hops.MARKETDATA]
    assert md["1m"]["count"] == 4 and md["1m"]["p50_ms"] == 1.0
    assert md["over_bound"] is False  # 4 samples: fewer than MIN_SAMPLES_TO_FLAG
    assert MIN_SAMPLES_TO_FLAG == 5
    t += S // 10
    h.observe("md.book.BTCTRY", pkt(book(recv_mono_ns=t - 2_000_000), t - 1_000_000,
                                    source="marketdata", seq=7), t)
    doc = h.report(t, {hops.MARKETDATA: 0.5, "bus→supervisor": 5.0}, {})
    rows = {r["hop"]: r for r in doc["hops"]}
    assert rows[hops.MARKETDATA]["over_bound"] is True
    assert rows["bus→supervisor"]["over_bound"] is False
    assert rows[hops.INTENT_TO_ORDER]["bound_ms"] is None
    assert doc["slow_hops"] == ["marketdata p99 1.000 ms > 0.5 ms (1m, n=5)"]
    actors = {a["actor"]: a for a in doc["actors"]}
    assert actors["marketdata"]["gaps"] == 1 and actors["marketdata"]["lost"] == 2
    assert actors["marketdata"]["published"] == 5


def test_report_carries_heartbeat_figures() -> None:
    h = BusHealth("supervisor", started_mono_ns=0)
    doc = h.report(S, {}, {
        "marketdata": {"bus_received": 7, "bus_gaps": 1, "bus_lost": 2, "bus_malformed": 3,
                       "bus_oversize": 1, "bus_future_stamps": 2},
        "bus": {"proxy_forwarded": 9, "proxy_dropped": 1, "proxy_dropped_frame_count": 1},
        "recorder": {"records": 4, "flush_lag_ms": 12, "gaps": 0, "lost": 0, "malformed": 1},
    })
    actors = {a["actor"]: a for a in doc["actors"]}
    assert actors["marketdata"]["subscriber"] == {"received": 7, "gaps": 1, "lost": 2,
                                                  "drops": 3, "oversize": 1,
                                                  "future_stamps": 2}
    assert actors["recorder"]["subscriber"]["drops"] == 1
    assert doc["proxy"] == {"forwarded": 9, "dropped": 1,
                            "dropped_by_reason": {"frame_count": 1}}
    assert doc["recorder"]["flush_lag_ms"] == 12
    assert doc["queue_depth"]["available"] is False


# --- config, trading state, rendering, watch -------------------------------------------

@pytest.mark.parametrize(("text", "field"), [
    ("[supervisor]\nhop_p99_bound_ms = -1.0\n", "supervisor.hop_p99_bound_ms"),
    ("[supervisor]\nhop_p99_bound_ms = nan\n", "supervisor.hop_p99_bound_ms"),
    ('[supervisor.hop_p99_bounds_ms]\n"marketdata" = 0\n',
     "supervisor.hop_p99_bounds_ms.marketdata"),
    ('[supervisor.hop_p99_bounds_ms]\n"bus→dashboard" = 5\n',
     "supervisor.hop_p99_bounds_ms.bus→dashboard"),
])
def test_bad_hop_bounds_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_config(path)


def test_hop_bounds_default_and_override(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[supervisor]\nhop_p99_bound_ms = 50\n[supervisor.hop_p99_bounds_ms]\n'
                    '"intent→order" = 5\n', encoding="utf-8")
    bounds = load_config(path).supervisor.hop_bounds()
    assert set(bounds) == set(hops.BOUNDABLE)
    assert bounds["intent→order"] == 5 and bounds["marketdata"] == 50
    assert bounds["executor→exchange"] == 2000  # the exchange's round trip: wider default


def test_a_slow_hop_is_a_warning_never_a_halt() -> None:
    base = TradingInputs(mode="paper", actors=tuple(ActorView(n, "READY", True)
                                                    for n in ACTOR_NAMES),
                         kill_switch=False, safety_latch=False, paused=False,
                         exchange_reachable=True, recorder_recording=True)
    out = derive_trading_state(replace(base, slow_hops=("marketdata p99 3 ms > 1 ms",)))
    assert out.state == "TRADING"
    assert out.reasons == ("warn:bus:slow hop marketdata p99 3 ms > 1 ms",)
    halted = derive_trading_state(replace(base, paused=True, slow_hops=("x",)))
    assert halted.state == "HALTED" and "warn:bus:slow hop x" in halted.reasons


def _busy_report() -> dict[str, Any]:
    h = BusHealth("supervisor", started_mono_ns=0)
    t = 0
    for seq in range(1, 400):
        t += S // 7
        h.observe("md.book.BTCTRY", pkt(book(recv_mono_ns=t - 123_456_789), t - 98_765_432,
                                        source="a-very-long-actor-name", seq=seq), t)
    return h.report(t, {h_: 0.001 for h_ in hops.BOUNDABLE}, {
        "a-very-long-actor-name": {"bus_received": 123456789, "bus_gaps": 99999,
                                   "bus_lost": 999999, "bus_malformed": 9999999},
        "bus": {"proxy_forwarded": 10**12, "proxy_dropped": 10**6},
        "recorder": {"flush_lag_ms": 123456, "dropped": 10**6}})


def test_bus_health_text_fits_80_columns_and_flags() -> None:
    lines = render_bus_health(_busy_report())
    assert max(len(x) for x in lines) <= 80, max(lines, key=len)
    md = next(x for x in lines if x.startswith("marketdata "))
    assert md.endswith("SLOW")
    assert any(x.startswith("WARN slow hop: marketdata") for x in lines)
    assert any("queue depth: not exposed" in x for x in lines)


def test_watch_frames_redraw_on_a_tty_and_append_otherwise() -> None:
    docs = iter([{"n": 1}, None, {"n": 3}])
    tty, piped = io.StringIO(), io.StringIO()
    assert watch(lambda: next(docs), lambda d: f"doc {d['n']}", tty, interval_s=0.1, tty=True,
                 sleep=lambda s: None, count=3) == 0
    frames = tty.getvalue().split(CLEAR_HOME)
    assert frames[0] == "" and len(frames) == 4
    assert "doc 1" in frames[1] and "not running (watching)" in frames[2]
    docs = iter([{"n": 1}, {"n": 2}])
    watch(lambda: next(docs), lambda d: f"doc {d['n']}", piped, interval_s=0.1, tty=False,
          sleep=lambda s: None, count=2)
    text = piped.getvalue()
    assert "\x1b" not in text
    first, second = text.split("\n\n")
    assert first.endswith("doc 1") and second.endswith("doc 2\n")


def test_watch_ctrl_c_exits_0() -> None:
    def interrupt() -> dict[str, Any]:
        raise KeyboardInterrupt
    assert watch(interrupt, str, io.StringIO(), interval_s=1, tty=True) == 0


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.5])),
                min_size=1, max_size=400))
@settings(max_examples=200, deadline=None)
def test_weighted_quantiles_equal_a_slow_reference(samples: list[tuple[int, float]]) -> None:
    # Few distinct values (so kept values repeat across buckets) and at most 4 kept a
    # second (so busy seconds are sampled): the fast path (weights summed per value, C
    # accumulate and bisect) against a plain loop over (value, weight) pairs.
    w = Window(60, per_second=4)
    for sec, v in sorted(samples, key=lambda s: s[0]):
        w.add(sec + 0.5, v)
    pairs = sorted((v, b.count / len(b.kept)) for b in w._buckets for v in b.kept)
    n = sum(b.count for b in w._buckets)

    def ref(q: float) -> float:
        acc = 0.0
        for v, weight in pairs:
            acc += weight
            if acc >= q * n - 1e-9 * n:
                return v
        return pairs[-1][0]

    s = w.stats(10.0)
    assert s.count == n == len(samples)
    assert (s.p50, s.p99) == (ref(0.50), ref(0.99))


def test_light_decoding_sees_what_a_full_decode_sees() -> None:
    # The supervisor reads the bus with observe_raw (envelope, stamps and ids only);
    # the figures must equal those of full decoding.
    from bus.messages import packet_encoder
    ms = 1_000_000
    msgs = [("md.book.BTCTRY", book(recv_mono_ns=10 * ms), 11 * ms, "marketdata", 1),
            ("intent.BTCTRY", intent("i1", book_mono_ns=10 * ms), 14 * ms, "strategy", 1),
            ("order.BTCTRY", order("i1", "c1", "PENDING"), 16 * ms, "executor", 1),
            ("decision.BTCTRY", decision("i1"), 17 * ms, "risk", 1),
            ("order.BTCTRY", order("i1", "c1", "OPEN"), 20 * ms, "executor", 3),  # a gap
            ("hb.risk", decision("x"), 21 * ms, "risk", 1)]  # any body: envelope only
    full, light = BusHealth("s", 0), BusHealth("s", 0)
    for topic, body, mono, source, seq in msgs:
        p = pkt(body, mono, source=source, seq=seq)
        full.observe(topic, p, mono + ms)
        assert light.observe_raw([topic.encode(), packet_encoder.encode(p)], mono + ms)
    a, b = full.report(30 * ms, {}, {}), light.report(30 * ms, {}, {})
    assert a == b
    assert {h["hop"]: h["1m"]["count"] for h in a["hops"]}[hops.EXECUTOR_TO_EXCHANGE] == 1
    assert {x["actor"]: x["gaps"] for x in a["actors"]}["executor"] == 1
    assert not light.observe_raw([b"md.book.X", b"\xc1garbage"], 40 * ms)
    assert not light.observe_raw([b"only one frame"], 40 * ms)
    assert light.malformed == 2


def test_forged_sources_cannot_grow_the_flows_without_bound() -> None:
    h = BusHealth("s", 0)
    for i in range(500):
        h.observe("hb.x", pkt(decision("x"), 1, source=f"forger{i}"), 2)
    assert len(h.flows) == 65
    assert h.flows["(others)"].stats.received == 500 - 64


def test_the_listener_thread_yields_the_cpu_and_only_it() -> None:
    import os
    import threading

    from actors.supervisor.healthwatch import NICE_INCREMENT, _lower_priority
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int] = {}

    def run() -> None:
        _lower_priority()
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen["thread"] == min(19, before + NICE_INCREMENT)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the supervisor's loop is not


def test_a_long_window_resorts_every_60th_of_its_span_with_exact_counts() -> None:
    w = Window(900)
    for i in range(100):
        w.add(100 + i / 10, float(i))  # 0..99 over 10 s
    first = w.stats(110.0)
    assert (first.count, first.p50, first.p99, first.max) == (100, 49.0, 98.0, 99.0)
    w.add(110.5, 1000.0)  # within 15 s: quantiles kept, count and max exact
    kept = w.stats(111.0)
    assert (kept.count, kept.max) == (101, 1000.0)
    assert (kept.p50, kept.p99) == (49.0, 98.0)
    assert w.stats(111.0, 60).p99 == 99.0  # the minute is always sorted afresh
    later = w.stats(125.0)  # 15 s on: sorted again
    assert (later.count, later.p50, later.p99) == (101, 50.0, 99.0)
    # a reused p99 is capped by the current maximum once the top samples expired
    w.add(1000.5, 5.0)
    assert w.stats(1000.9).p99 == 1000.0  # sorted afresh: seconds 101..110 and 1000
    capped = w.stats(1010.0)  # second 110 (the 1000.0) expired; sorted < 15 s ago
    assert capped.max == 5.0 and capped.p99 == 5.0 and capped.p50 == 5.0
