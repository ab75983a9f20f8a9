"""Replay engine and CLI: re-framing, pacing, primers, decision comparison, the
recordings/replay commands (exit codes, JSON output) and an end-to-end replay into an
isolated pipeline started by the real supervisor."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import zmq
from click.testing import CliRunner

from actors.supervisor.cli import cli
from bus.auth import load_for
from bus.messages import (
    SCHEMA_VERSION,
    BookSnapshot,
    Control,
    Envelope,
    FeedStatus,
    Heartbeat,
    Intent,
    Packet,
    RiskDecision,
    SymbolRules,
    packet_decoder,
    packet_encoder,
)
from replay.feed import BusClient, feed
from replay.pipeline import IsolatedPipeline
from replay.select import Reframer, select_records
from replay.verify import compare_decisions, decode_decisions, start_points, verify_feed
from shared.config import load_config, to_toml
from shared.recording import Record, SegmentWriter, read_recording, segment_paths

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def pkt(body: object, seq: int, wall: int, source: str = "marketdata") -> bytes:
    return packet_encoder.encode(Packet(Envelope(SCHEMA_VERSION, source, "rec-inc", seq, wall,
                                                 wall - T0), body))


def book(i: int) -> BookSnapshot:
    return BookSnapshot(symbol="BTCTRY", bids=[(Decimal("100") + i, Decimal("1"))],
                        asks=[(Decimal("101") + i, Decimal("1"))], source="ws",
                        exchange_ts_ms=i, recv_wall_ns=T0 + i, recv_mono_ns=i, age_ms=0)


def make_recording(root: Path, n: int = 200, step_ns: int = 10 * MS) -> Path:
    """md.book every step with a heartbeat of the same publisher in between (so the
    recorded md seqs have holes), plus rules/status/portfolio-like state topics."""
    w = SegmentWriter(root, schema_version=SCHEMA_VERSION, max_s=0.7)
    seq = 0
    for i in range(n):
        ts = T0 + i * step_ns
        seq += 1
        w.append(ts, b"md.book.BTCTRY", pkt(book(i), seq, ts))
        seq += 1
        w.append(ts, b"hb.marketdata", pkt(Heartbeat(actor="marketdata", pid=1, state="READY",
                                                     ready=True, uptime_s=1.0, counters={}),
                                           seq, ts))
        if i % 50 == 0:
            seq += 1
            w.append(ts, b"md.rules.BTCTRY", pkt(SymbolRules(
                symbol="BTCTRY", base="BTC", quote="TRY", price_scale=0, qty_scale=8,
                tick_size=Decimal(1), min_price=Decimal(1), max_price=Decimal(10**9),
                min_total=Decimal(10), status=f"T{i}"), seq, ts))
    w.close()
    return root


def test_reframer_makes_one_gapless_stream_per_topic_and_keeps_clock_and_body() -> None:
    rf = Reframer("run-1")
    b1, b2 = pkt(book(1), 3, T0 + 5), pkt(book(2), 9, T0 + 7)
    out1, out2 = rf("md.book.BTCTRY", b1), rf("md.book.BTCTRY", b2)
    other = rf("md.status", pkt(FeedStatus(symbol="BTCTRY", fresh=True, source="ws",
                                           age_ms=0), 4, T0 + 6))
    p1, p2, p3 = (packet_decoder.decode(x) for x in (out1, out2, other))
    assert (p1.env.seq, p2.env.seq, p3.env.seq) == (1, 2, 1)
    assert p1.env.source == p2.env.source == "replay/marketdata/md.book.BTCTRY"
    assert p1.env.incarnation == "run-1"
    assert (p1.env.wall_ns, p1.env.mono_ns) == (T0 + 5, 5)  # the message clock survives
    assert p1.body == book(1) and p2.body == book(2)
    assert out1.endswith(b1[-20:])  # body bytes are the recorded ones
    assert rf("md.x", b"\xc1junk") is None and rf.malformed == 1


def test_select_with_from_sends_primers_of_state_topics(tmp_path: Path) -> None:
    rec = make_recording(tmp_path)
    start = T0 + 120 * 10 * MS
    sel = select_records(rec, ("md.",), start, None)
    assert sel.records[0].recv_ns >= start
    assert all(r.topic.startswith("md.") for r in sel.records)
    # The last rules before the window (written at i=100) lead the replay.
    assert [r.topic for r in sel.primers] == ["md.rules.BTCTRY"]
    assert packet_decoder.decode(sel.primers[0].payload).body.status == "T100"
    assert select_records(rec, ("md.book",), start, None).primers == []


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, float]] = []

    def __call__(self, topic: bytes, payload: bytes) -> None:
        self.sent.append((topic, payload, time.monotonic()))


@pytest.mark.parametrize("speed", [2.0, 4.0])
def test_pacing_follows_the_recording_divided_by_speed(tmp_path: Path, speed: float) -> None:
    rec = make_recording(tmp_path, n=201, step_ns=10 * MS)  # spans 2 s
    records = list(read_recording(rec, ["md.book"]))
    sink = _Sink()
    stats = feed(sink, records, speed=speed, reframer=Reframer())
    want = 2.0 / speed
    assert want * 0.75 <= stats.elapsed_s <= want * 1.25, stats.elapsed_s
    # Evenly, not in a burst at the end: the midpoint is sent near half time.
    mid = sink.sent[100][2] - sink.sent[0][2]
    assert abs(mid - want / 2) < want * 0.25


def test_max_speed_does_not_sleep(tmp_path: Path) -> None:
    rec = make_recording(tmp_path, n=201, step_ns=10 * MS)
    stats = feed(_Sink(), list(read_recording(rec)), speed=None, reframer=Reframer())
    assert stats.elapsed_s < 0.5


def test_paced_replay_through_a_real_bus_arrives_complete_and_in_order(tmp_path: Path) -> None:
    rec = make_recording(tmp_path / "rec", n=201, step_ns=10 * MS)
    records = list(read_recording(rec, ["md.book"]))
    with IsolatedPipeline(None, actors=()) as pipe:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"md.")
        load_for(pipe.cfg.data_path, "replay").client(sub, "bus")
        sub.connect(pipe.cfg.bus_sub_endpoint)
        client = BusClient(pipe.cfg)
        client.connect()
        stats = feed(client.publish_raw, records, speed=2.0, reframer=Reframer())
        got = []
        while sub.poll(500, zmq.POLLIN):
            got.append(packet_decoder.decode(sub.recv_multipart()[1]))
        client.close()
        sub.close(linger=0)
        ctx.term()
    assert 0.75 <= stats.elapsed_s <= 1.25
    assert [p.env.seq for p in got] == list(range(1, 202))
    assert [p.env.wall_ns for p in got] == [r.recv_ns for r in records]


def decision(iid: str, verdict: str = "approved", qty: str = "1") -> RiskDecision:
    return RiskDecision(intent_id=iid, symbol="BTCTRY", verdict=verdict, reasons=["ok"],
                        side="buy", order_type="limit", price=Decimal("100"),
                        quantity=Decimal(qty), requested_quantity=Decimal(qty))


def test_compare_decisions() -> None:
    same = compare_decisions([decision("a"), decision("b")], [decision("b"), decision("a")])
    assert same.ok and same.matched == 2
    # Executor status is not part of the comparison (dry-run executor in the replay).
    d = decision("a")
    d.executor_status = "accepted"
    assert compare_decisions([decision("a")], [d]).ok
    # A trailing zero is the same quantity.
    assert compare_decisions([decision("a", qty="1.0")], [decision("a", qty="1")]).ok
    diff = compare_decisions([decision("a"), decision("b"), decision("c")],
                             [decision("a", "rejected"), decision("c", qty="2"),
                              decision("d")])
    assert not diff.ok
    assert diff.differences == [
        "differs: decision a (BTCTRY): verdict approved -> rejected",
        "missing in replay: decision b (BTCTRY): recorded verdict=approved reasons=[ok] "
        "price=100 quantity=1",
        "differs: decision c (BTCTRY): quantity 1 -> 2",
        "extra in replay: decision d (BTCTRY): replayed verdict=approved reasons=[ok] "
        "price=100 quantity=1"]
    twice = compare_decisions([decision("a")], [decision("a"), decision("a")])
    assert twice.differences == [
        "extra in replay: decision a (BTCTRY) #2: replayed verdict=approved reasons=[ok] "
        "price=100 quantity=1"]


def test_compare_intents_names_the_field_old_and_new() -> None:
    def intent(price: str, at: int) -> Intent:
        return Intent(intent_id="i", symbol="ETHTRY", side="buy", order_type="limit",
                      price=Decimal(price), quantity=Decimal("0.5"), reason="entry",
                      ttl_s=30.0, strategy="s", created_wall_ns=at)

    res = compare_decisions([], [], [intent("100", 5)], [intent("101.0", 5)])
    assert res.differences == ["differs: intent i (ETHTRY): price 100 -> 101.0"]
    assert compare_decisions([], [], [intent("100", 5)], [intent("100.00", 5)]).ok
    late = compare_decisions([], [], [intent("100", 5)], [intent("100", 6)])
    assert late.differences == ["differs: intent i (ETHTRY): created_wall_ns 5 -> 6"]


def _rec(topic: str, body: object, *, source: str = "x", inc: str = "i", seq: int = 1,
         at: int = 0) -> Record:
    return Record(at, topic, packet_encoder.encode(
        Packet(Envelope(1, source, inc, seq, at, 0), body)))  # type: ignore[arg-type]


def _hb(actor: str, seq: int, at: int, joined: int = 0, inc: str = "i1") -> Record:
    counters = {"joined_hb_seq": joined} if joined else {}
    return _rec(f"hb.{actor}", Heartbeat(actor=actor, pid=1, state="READY", ready=True,
                                         uptime_s=0.0, counters=counters),
                source=actor, inc=inc, seq=seq, at=at)


def test_each_actor_starts_where_its_own_heartbeat_came_back() -> None:
    """The strategy joined on its 2nd heartbeat (the 1st went by before its
    subscription was in place): its ReplayStart goes in place of that one; risk's start
    is not in the window, so it goes first, before the primers. Heartbeats are not fed;
    controls go on replay.control (shutdown left out)."""
    book = _rec("md.status", FeedStatus(symbol="X", fresh=True, source="ws", age_ms=0), at=1)
    records = [book, _hb("strategy", 1, 2), _rec("md.status", book_status(), at=3),
               _hb("strategy", 2, 4), _rec("md.status", book_status(), at=5),
               _hb("strategy", 3, 6, joined=2),
               _rec("control", Control(command="shutdown"), at=7),
               _rec("control", Control(command="pause"), at=8)]
    starts, notes = start_points(records)
    first, fed = verify_feed(records, starts)
    assert [packet_decoder.decode(r.payload).body.actor for r in first] == ["risk"]
    assert [r.topic for r in fed] == ["md.status", "md.status", "replay.start", "md.status",
                                      "replay.control"]
    assert packet_decoder.decode(fed[2].payload).body.actor == "strategy"
    assert fed[2].recv_ns == 4 and notes == []
    assert packet_decoder.decode(fed[4].payload).body.command == "pause"
    # a restart in the window is said, not hidden
    _, notes = start_points([*records, _hb("strategy", 1, 9, inc="i2")])
    assert len(notes) == 1 and "strategy restarted" in notes[0]


def book_status() -> FeedStatus:
    return FeedStatus(symbol="X", fresh=True, source="ws", age_ms=0)


def test_only_risks_own_decisions_are_expected() -> None:
    """A decision with another source (the strategy's stand-ins travel on
    intent.outcome., but a claim is a claim) is not one risk is to make again."""
    recs = [_rec("decision.BTCTRY", decision("a"), source="risk"),
            _rec("decision.BTCTRY", decision("b", "rejected"), source="strategy")]
    assert [d.intent_id for d in decode_decisions(recs)] == ["a"]


def test_pipeline_config_is_isolated_and_loads(tmp_path: Path) -> None:
    live = tmp_path / "live.toml"
    live.write_text('mode = "live"\n[gates]\nlive_trading = true\nlive_trading_ack = '
                    f'"I_UNDERSTAND"\n[bus]\npub_endpoint = "ipc://{tmp_path}/live.pub"\n'
                    '[strategy]\nentry_notional_try = "250"\n')
    base = load_config(live)
    pipe = IsolatedPipeline(base)
    try:
        cfg = pipe.cfg
        assert cfg.mode == "dry-run" and not cfg.gates.live_trading
        assert cfg.bus_pub_endpoint.startswith(f"ipc://{pipe.root}")
        for p in (cfg.runtime_path, cfg.log_path, cfg.path(cfg.executor.db_path)):
            assert str(p).startswith(str(pipe.root))
        assert cfg.enabled_actors() == ["bus", "executor", "risk", "strategy"]
        assert cfg.strategy.params == {"entry_notional_try": "250"}
        assert not cfg.executor.replay_mirror  # only --verify mirrors (run_replay sets it)
    finally:
        pipe.stop()
    assert not pipe.root.exists()


def test_to_toml_round_trips_through_the_config_loader(tmp_path: Path) -> None:
    doc = {"mode": "dry-run", "marketdata": {"symbols": ["A", "B"], "depth": 3},
           "actors": {"exchange-sim": {"enabled": False}}, "strategy": {"ttl_s": 1.5}}
    (tmp_path / "c.toml").write_text(to_toml(doc))
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.marketdata.symbols == ["A", "B"] and not cfg.actors["exchange-sim"].enabled


# --- CLI -------------------------------------------------------------------------------


def test_recordings_list_and_show(tmp_path: Path) -> None:
    rec = make_recording(tmp_path / "rec", n=100)
    runner = CliRunner()
    out = runner.invoke(cli, ["recordings", "list", str(rec), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert len(doc) == 2  # max_s=0.7 over ~1 s
    assert sum(d["records"] for d in doc) == 202
    assert doc[0]["topics"] == {"hb": 70, "md": 72}
    assert {"path", "start_ns", "end_ns", "torn_tail", "bytes_skipped"} <= set(doc[0])
    text = runner.invoke(cli, ["recordings", "list", str(rec)])
    assert text.exit_code == 0 and "records" in text.output

    frm = str((T0 + 10 * 10 * MS) / 1e9)
    shown = runner.invoke(cli, ["recordings", "show", str(rec), "--topics", "md.book",
                                "--from", frm, "--to", "2023-11-14T22:13:20.2Z", "--json"])
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(x) for x in shown.output.splitlines()]
    assert [x["body"]["exchange_ts_ms"] for x in lines] == list(range(10, 21))
    assert lines[0]["body"]["bids"] == [["110", "1"]]  # Decimals as strings
    assert lines[0]["env"]["source"] == "marketdata"
    plain = runner.invoke(cli, ["recordings", "show", str(rec), "--topics", "hb,md.rules"])
    assert plain.exit_code == 0 and len(plain.output.splitlines()) == 102


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    rec = make_recording(tmp_path / "rec", n=5)
    runner = CliRunner()
    cases = [
        ["replay", str(rec), "--speed", "2", "--max"],
        ["replay", str(rec), "--speed", "0"],
        ["replay", str(tmp_path / "missing")],
        ["replay", str(rec), "--from", "soon"],
        ["recordings", "show", str(rec), "--to", "later"],
        ["recordings", "show", str(tmp_path / "missing")],
    ]
    for argv in cases:
        res = runner.invoke(cli, argv)
        assert res.exit_code == 2, (argv, res.output)


def test_show_a_torn_file_prints_complete_records_and_notes_the_tail(tmp_path: Path) -> None:
    rec = make_recording(tmp_path / "rec", n=5, step_ns=MS)
    [seg] = segment_paths(rec)
    seg.write_bytes(seg.read_bytes()[:-3])
    res = CliRunner().invoke(cli, ["recordings", "show", str(seg), "--json"])
    assert res.exit_code == 0
    assert "torn tail" in res.output  # (stderr is mixed into output by CliRunner)
    listed = CliRunner().invoke(cli, ["recordings", "list", str(rec), "--json"])
    assert json.loads(listed.output)[0]["torn_tail"] is True


def test_replay_command_end_to_end(tmp_path: Path) -> None:
    """`btcbot-supervisor replay FILE --max` as an operator runs it: an isolated pipeline
    (supervisor, bus, executor, risk, strategy) in a temp dir, fed and stopped again."""
    rec = make_recording(tmp_path / "rec", n=300, step_ns=MS)
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "actors.supervisor", "--config",
                          str(tmp_path / "none.toml"), "replay", str(rec), "--max"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "replayed 306 records" in res.stdout  # 300 books + 6 rules, no heartbeats
    assert time.monotonic() - started < 60
    assert "replay [" not in res.stderr  # no progress bar when stdout is not a tty


def test_a_replayed_record_the_pipeline_missed_voids_the_comparison() -> None:
    from types import SimpleNamespace

    from replay.run import lost_inputs

    counters = {"strategy": {"bus_lost": 0, "bus_gaps": 0},
                "risk": {"bus_lost": 12, "bus_gaps": 2}}
    pipe = SimpleNamespace(cfg=SimpleNamespace(supervisor=SimpleNamespace(
        heartbeat_interval_s=0.0)), status=lambda: {"actors": [
            {"name": n, "counters": c} for n, c in counters.items()]})
    out = lost_inputs(pipe, time.monotonic())  # type: ignore[arg-type]
    assert len(out) == 1 and "risk missed 12 replayed messages (2 gaps)" in out[0]
    counters["risk"] = {"bus_lost": 0, "bus_gaps": 0}
    assert lost_inputs(pipe, time.monotonic()) == []  # type: ignore[arg-type]


def test_the_recorded_risks_baseline_is_the_one_its_start_heartbeat_announced() -> None:
    from bus.messages import RiskInfo
    from replay.verify import recorded_risk_day

    def beat(seq: int, at: int, day: int, net: str, joined: int = 0) -> Record:
        counters = {"joined_hb_seq": joined} if joined else {}
        return _rec("hb.risk", Heartbeat(actor="risk", pid=1, state="READY", ready=True,
                                         uptime_s=0.0, counters=counters,
                                         info=RiskInfo(gates=[], fresh=[], day=day,
                                                       day_start_net=Decimal(net),
                                                       day_marked=True)),
                    source="risk", inc="r1", seq=seq, at=at)

    records = [beat(1, 1, 739_000, "-40"), beat(2, 2, 739_000, "-40"),
               beat(3, 3, 739_000, "-55", joined=2)]
    starts, _ = start_points(records)
    assert recorded_risk_day(records, starts) == (739_000, Decimal("-40"), True)
    fresh = [beat(1, 1, -1, "0", joined=1)]
    assert recorded_risk_day(fresh, start_points(fresh)[0]) is None
