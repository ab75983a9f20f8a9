"""btcbot-supervisor against real processes on real sockets (issue: runtime)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import zmq

from tests.helpers import (
    REPO,
    SUPERVISOR,
    alive,
    bus_auth,
    processes_using,
    wait_for,
)

PIPELINE = ["bus", "exchange-sim", "recorder", "executor", "marketdata", "risk", "strategy",
            "reconciler"]


def test_start_detach_all_ready_then_stop_leaves_nothing(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    doc = p.status()
    assert doc["mode"] == "paper"
    assert doc["exchange"]["kind"] == "simulator"
    assert doc["exchange"]["url"].startswith("http://127.0.0.1:")
    assert [a["name"] for a in doc["actors"]] == PIPELINE
    for a in doc["actors"]:
        assert a["ready"], a
        assert a["pid"] and alive(a["pid"])
        # background actors yield the CPU to the tick-to-order path
        want = 10 if a["name"] in ("recorder", "reconciler") else 0
        assert psutil.Process(a["pid"]).nice() == want, a["name"]
        for key in ("state", "restarts", "uptime_s", "heartbeat_age_s", "cpu_percent",
                    "rss_bytes", "counters"):
            assert key in a
    for key in ("gates", "latch", "idempotency"):
        assert key in doc
    assert (p.config.parent / "run").stat().st_mode & 0o777 == 0o700  # ipc sockets live here
    pids = list(p.pids().values())
    sup = p.supervisor_pid()
    r = p.cli("stop")
    assert r.returncode == 0, r.stderr
    assert not alive(sup)
    assert [pid for pid in pids if alive(pid)] == []
    assert p.cli("status").returncode == 1


def test_second_start_exits_3(make_pipeline) -> None:
    p = make_pipeline({"actors": {n: {"enabled": False} for n in PIPELINE if n != "bus"}})
    p.start()
    r = p.cli("start", "--detach")
    assert r.returncode == 3
    assert "already running" in r.stderr
    r = p.cli("start")  # foreground too
    assert r.returncode == 3


def test_sigkill_each_actor_comes_back_others_untouched(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    for name in PIPELINE:
        before = p.status()["actors"]
        pids = {a["name"]: a["pid"] for a in before}
        restarts = {a["name"]: a["restarts"] for a in before}
        os.kill(pids[name], signal.SIGKILL)

        def back(name: str = name, old: int = pids[name]) -> bool:
            a = p.actor(name)
            return a["ready"] and a["pid"] not in (None, old)

        wait_for(back, timeout=20, what=f"{name} restarted")
        after = {a["name"]: a for a in p.status()["actors"]}
        assert after[name]["restarts"] == restarts[name] + 1
        for other, pid in pids.items():
            if other != name:
                assert after[other]["pid"] == pid, f"{other} changed pid when {name} was killed"


def test_sigstopped_actor_is_killed_and_restarted(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    old = p.actor("strategy")
    os.kill(old["pid"], signal.SIGSTOP)
    t0 = time.monotonic()
    wait_for(lambda: p.actor("strategy")["pid"] not in (None, old["pid"]) and
             p.actor("strategy")["ready"], timeout=20, what="stopped strategy replaced")
    elapsed = time.monotonic() - t0
    assert elapsed >= 2.5, "killed before its heartbeat timeout (3 s)"
    assert not alive(old["pid"])
    assert p.actor("strategy")["restarts"] == 1
    log = (p.config.parent / "logs" / "supervisor.log").read_text()
    assert "heartbeat timeout" in log


def test_crash_at_start_hits_intensity_limit_and_sets_kill_switch(make_pipeline) -> None:
    p = make_pipeline(
        {"supervisor": {"intensity_max_restarts": 3, "intensity_window_s": 30.0,
                        "backoff_initial_s": 0.05, "backoff_max_s": 0.2}},
        env={"BTCBOT_TEST_FAIL_AT_START": "reconciler"},
    )
    r = p.cli("start", "--detach")
    assert r.returncode == 1
    assert "reconciler" in r.stderr
    doc = wait_for(lambda: (d := p.status()) and next(
        a for a in d["actors"] if a["name"] == "reconciler")["gave_up"] and d, timeout=20,
        what="gave up")
    recon = next(a for a in doc["actors"] if a["name"] == "reconciler")
    assert recon["state"] == "GAVE_UP"
    assert recon["pid"] is None
    assert recon["restarts"] == 3
    assert "giving up" in doc["latch"]["supervisor_kill_switch"]
    wait_for(lambda: p.status()["latch"]["kill_switch"] is True, timeout=10,
             what="kill switch persisted by the executor")
    assert p.status()["trading"]["state"] == "HALTED"
    log = (p.config.parent / "logs" / "supervisor.log").read_text()
    assert "giving up" in log


def test_supervisor_sigkill_leaves_no_child(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    pids = [pid for pid in p.pids().values() if pid]
    assert len(pids) == len(PIPELINE)
    os.kill(p.supervisor_pid(), signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10, what="children gone")
    assert processes_using(p.config) == []


def test_restart_one_actor(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    pids = p.pids()
    r = p.cli("restart", "risk")
    assert r.returncode == 0, r.stderr
    after = p.pids()
    assert after["risk"] != pids["risk"]
    assert {k: v for k, v in after.items() if k != "risk"} == {
        k: v for k, v in pids.items() if k != "risk"}
    assert p.cli("restart", "nope").returncode == 1


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("mode = 'paper'\nbogus = 1\n", "bogus"),
        ("[risk]\ncooldown_s = 'soon'\n", "risk.cooldown_s"),
        ("[actors.strategy]\nrestart = 'sometimes'\n", "actors.strategy.restart"),
        ("[actors.nosuch]\nenabled = true\n", "actors.nosuch"),
        ("mode = 'paper'\n[marketdata]\nsymbols = []\n", "marketdata.symbols"),
        ("[bus]\npub_endpoint = 'udp://0.0.0.0:5555'\n", "bus.pub_endpoint"),
        ("[actors.recorder]\nnice = -5\n", "actors.recorder.nice"),
        ("[supervisor]\nhop_p99_bound_ms = 0\n", "supervisor.hop_p99_bound_ms"),
        ("[supervisor.hop_p99_bounds_ms]\nnope = 5\n", "supervisor.hop_p99_bounds_ms.nope"),
    ],
)
def test_bad_config_exits_2_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    for args in (["start", "--detach"], ["status"]):
        r = subprocess.run([*SUPERVISOR, "--config", str(cfg), *args], capture_output=True,
                           text=True, cwd=REPO, timeout=30)
        assert r.returncode == 2, r
        assert field in r.stderr, r.stderr
    # and an actor started by hand on it says the same
    r = subprocess.run([sys.executable, "-m", "actors.risk", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2 and field.split(".")[0] in r.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    r = subprocess.run([*SUPERVISOR, "--config", str(tmp_path / "nope.toml"), "status"],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2
    assert "nope.toml" in r.stderr


def test_malformed_frames_are_counted_and_survived(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    pids = p.pids()
    endpoint = f"ipc://{p.config.parent / 'run' / 'bus.in'}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    # A compromised supervisor key: it may publish on control, so its garbage gets past
    # the proxy's roles check to every actor (md.book and hb.strategy are dropped there).
    bus_auth(p.config, "supervisor").client(pub, "bus")
    pub.connect(endpoint)
    time.sleep(0.5)  # slow joiner: let the proxy's subscriptions reach us
    garbage = [
        [b"control", b"\x00\x01not msgpack"],
        [b"control", b"\x93\x01\x02\x03"],
        [b"control"],
        [b"control", b"x", b"y"],
        [b"md.book.BTCTRY", os.urandom(64)],
        [b"hb.strategy", b"\xc1"],
    ]
    for _ in range(5):
        for frames in garbage:
            pub.send_multipart(frames)
    pub.close(linger=1000)
    ctx.term()

    def counted() -> bool:
        actors = {a["name"]: a for a in p.status()["actors"]}
        def malformed(n: str) -> int:
            c = actors[n]["counters"]
            return max(c.get("bus_malformed", 0), c.get("malformed", 0))

        # Wrong frame counts never get past the proxy (it drops and counts them); the
        # two undecodable control payloads reach every actor, five times each.
        dropped = actors["bus"]["counters"].get("proxy_dropped_frame_count", 0)
        return dropped >= 10 and all(
            malformed(n) >= 10 for n in PIPELINE if n not in ("exchange-sim", "bus"))

    wait_for(counted, timeout=10, what="every actor counted the garbage")
    assert p.pids() == pids, "an actor died on garbage"
