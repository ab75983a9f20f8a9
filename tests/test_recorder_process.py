"""The recorder as a real process on a real bus: SIGKILL mid-flood, heartbeat counters
(gaps, lost, malformed), and every record decodable afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import zmq

from bus.auth import load_for
from bus.messages import (
    SCHEMA_VERSION,
    Envelope,
    FeedStatus,
    Heartbeat,
    Packet,
    RecorderInfo,
    packet_decoder,
    packet_encoder,
)
from replay.feed import BusClient
from replay.pipeline import IsolatedPipeline
from shared.recording import SegmentReader, read_recording, scan_segment, segment_paths

FLOOD = """
import os, sys, time, zmq
from bus.auth import load_for
from bus.transport import Publisher
from bus.messages import FeedStatus
ctx = zmq.Context()
# md.status is marketdata's to publish: the flood holds its key (FLOOD_DATA: the data dir).
pub = Publisher(ctx, sys.argv[1], "flood", "flood-1",
                auth=load_for(os.environ["FLOOD_DATA"], "marketdata"))
time.sleep(1.0)  # subscriptions reach us (CURVE handshake; 0.3 s was short under load)
start = time.monotonic()
end = start + float(sys.argv[2])
# argv[3], optional: a pace in msg/s (0 = as fast as we can). An unpaced flood outruns
# the proxy and fills the high-water marks, which is PUB/SUB's documented loss, not the
# recorder's; a test of "no loss" paces the flood below the bus's throughput.
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
body = FeedStatus(symbol="BTCTRY", fresh=True, source="ws", age_ms=1)
sent = 0
while (now := time.monotonic()) < end:
    if rate and sent > (now - start) * rate:
        time.sleep(0.001)
        continue
    for _ in range(100):
        pub.publish(body, "md.status")
    sent += 100
pub.close()
ctx.destroy(linger=1000)
"""


def start_flood(pipe: IsolatedPipeline, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", FLOOD, pipe.cfg.bus_pub_endpoint, *args],
                            env={**os.environ, "FLOOD_DATA": str(pipe.cfg.data_path)})


def _pipeline(root: Path, **recorder: object) -> IsolatedPipeline:
    # restart "never": a SIGKILLed recorder stays dead, so its last record is its last.
    return IsolatedPipeline(None, actors=(), record=True, root=root,
                            extra={"recorder": {"flush_interval_ms": 100, **recorder},
                                   # nice 0: the flood measures the recorder,
                                   # not its background priority
                                   "actors": {"recorder": {"restart": "never", "nice": 0}}})


def test_sigkill_mid_flood_loses_only_the_tail_and_corrupts_nothing(tmp_path: Path) -> None:
    pipe = _pipeline(tmp_path / "p")
    with pipe:
        # Asked before the flood: the supervisor hears md.status too, and is slow then.
        recorder = psutil.Process(pipe.pids()["recorder"])
        flood = start_flood(pipe, "4")
        time.sleep(2.2)  # the flood's 1 s wait for subscriptions, then 1.2 s of flood
        killed_ns = time.time_ns()
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(30)  # reaped by the supervisor (slow on a loaded machine)
        flood.wait(15)
    paths = segment_paths(pipe.recordings)
    assert paths
    seqs = []
    for path in paths:
        info = scan_segment(path)
        assert not info.error
        with SegmentReader(path) as reader:
            for rec in reader.records():
                packet = packet_decoder.decode(rec.payload)  # every record is whole
                if packet.env.source == "flood":
                    seqs.append(packet.env.seq)
            assert reader.report.torn_tail == (reader.report.bytes_skipped > 0)
            assert reader.report.valid_bytes + reader.report.bytes_skipped == info.size
    assert len(seqs) > 10_000
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # At most the last flush interval (100 ms) is lost, plus scheduling slack.
    last = max(r.recv_ns for r in read_recording(pipe.recordings))
    assert killed_ns - last < 600_000_000, (killed_ns - last) / 1e6

    # A kill in the middle of a write(2) leaves part of a record: emulate it on a copy.
    victim = tmp_path / "torn.btcrec"
    shutil.copy(paths[-1], victim)
    whole = scan_segment(victim)
    with open(victim, "r+b") as f:
        f.truncate(whole.size - whole.bytes_skipped - 7)
    torn = scan_segment(victim)
    assert torn.torn_tail and torn.records == whole.records - 1
    assert torn.bytes_skipped > 0


def _recorder_heartbeat(sub: zmq.Socket, until: float) -> Heartbeat | None:
    last = None
    while time.monotonic() < until:
        if sub.poll(100, zmq.POLLIN):
            body = packet_decoder.decode(sub.recv_multipart()[1]).body
            assert isinstance(body, Heartbeat)
            last = body
            if body.counters.get("gaps") and body.counters.get("malformed"):
                return body
    return last


def test_heartbeat_counts_records_gaps_lost_and_malformed(tmp_path: Path) -> None:
    pipe = _pipeline(tmp_path / "p")
    with pipe:
        client = BusClient(pipe.cfg)
        client.connect()
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"hb.recorder")
        load_for(pipe.cfg.data_path, "operator").client(sub, "bus")
        sub.connect(pipe.cfg.bus_sub_endpoint)
        body = FeedStatus(symbol="X", fresh=True, source="ws", age_ms=0)
        for seq in (1, 2, 5, 6):  # 3 and 4 never sent: one gap, two lost
            env = Envelope(SCHEMA_VERSION, "gappy", "g-1", seq, time.time_ns(), 0)
            client.publish_raw(b"md.status", packet_encoder.encode(Packet(env, body)))
        client.publish_raw(b"md.status", b"\xc1 not msgpack")
        hb = _recorder_heartbeat(sub, time.monotonic() + 5)
        sub.close(linger=0)
        ctx.term()
        client.close()
    assert hb is not None
    c = hb.counters
    for key in ("records", "bytes", "gaps", "lost", "flush_lag_ms", "segments", "malformed"):
        assert key in c, key
    assert (c["gaps"], c["lost"], c["malformed"]) == (1, 2, 1)
    assert c["records"] >= 5 and c["segments"] == 1 and c["bytes"] > 0
    # The malformed frame is kept too: it is what was on the bus.
    payloads = [r.payload for r in read_recording(pipe.recordings, ["md.status"])]
    assert b"\xc1 not msgpack" in payloads
    assert sum(1 for p in payloads if p != b"\xc1 not msgpack"
               and packet_decoder.decode(p).env.source == "gappy") == 4


def test_recorder_rotates_by_size_under_load(tmp_path: Path) -> None:
    pipe = _pipeline(tmp_path / "p", segment_max_bytes=200_000)
    with pipe:
        # 3 s at up to 20,000 msg/s: even a third of that rate on a loaded machine
        # fills more than three 200 kB segments (one second did not, under the suite).
        flood = start_flood(pipe, "3", "20000")
        flood.wait(20)
        time.sleep(0.3)
    paths = segment_paths(pipe.recordings)
    assert len(paths) > 3
    infos = [scan_segment(p) for p in paths]
    assert all(not i.torn_tail and not i.error and i.size <= 200_000 for i in infos)
    seqs = [packet_decoder.decode(r.payload).env.seq
            for r in read_recording(pipe.recordings, ["md.status"])]
    # Recorded across segment boundaries without loss or duplicates.
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))



def _heartbeats(sub: zmq.Socket, until: float, done: object) -> Heartbeat | None:
    """Recorder heartbeats until ``done(hb)`` holds (or time runs out): the last one."""
    last = None
    while time.monotonic() < until:
        if sub.poll(100, zmq.POLLIN):
            body = packet_decoder.decode(sub.recv_multipart()[1]).body
            if isinstance(body, Heartbeat) and body.actor == "recorder":
                last = body
                if done(body):  # type: ignore[operator]
                    return body
    return last


def test_a_full_disk_means_not_recording_not_a_crash_and_recording_resumes(
        tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        pipe = _pipeline(tmp_path / "p", path=str(mnt / "rec"), retry_s=0.3,
                         housekeeping_interval_s=0.5)
        with pipe:
            ctx = zmq.Context()
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"hb.recorder")
            load_for(pipe.cfg.data_path, "operator").client(sub, "bus")
            sub.connect(pipe.cfg.bus_sub_endpoint)
            flood = start_flood(pipe, "3")
            hb = _heartbeats(sub, time.monotonic() + 20,
                             lambda h: h.counters.get("recording") == 0)
            assert hb is not None and hb.counters["recording"] == 0, hb
            assert isinstance(hb.info, RecorderInfo) and not hb.info.recording
            assert "ENOSPC" in hb.info.recording_reason, hb.info
            assert hb.counters["write_errors"] >= 1 and hb.counters["dropped"] > 0
            hb = _heartbeats(sub, time.monotonic() + 5,
                             lambda h: h.state == "ERROR_RETRYABLE")
            assert hb is not None and hb.state == "ERROR_RETRYABLE"
            recorder = psutil.Process(pipe.pids()["recorder"])
            assert recorder.is_running()  # still running, still heartbeating
            flood.wait(20)
            # What it wrote before the disk filled is whole: no torn record anywhere.
            kept = list(read_recording(mnt / "rec"))
            assert kept and not any(scan_segment(p).torn_tail
                                    for p in segment_paths(mnt / "rec"))
            # The operator frees space: recording resumes by itself.
            for p in (mnt / "rec").iterdir():
                p.unlink()
            hb = _heartbeats(sub, time.monotonic() + 15,
                             lambda h: h.counters.get("recording") == 1 and h.state == "READY")
            assert hb is not None and hb.counters["recording"] == 1, hb
            assert isinstance(hb.info, RecorderInfo) and hb.info.recording_reason == ""
            sub.close(linger=0)
            ctx.term()
            t0 = time.monotonic()
        # stopped with the pipeline (not a child of ours: psutil cannot tell its code),
        # never stuck in STOPPING
        assert recorder.wait(15) in (0, None)
        assert time.monotonic() - t0 < 10
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
