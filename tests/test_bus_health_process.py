"""Bus health against a real running paper pipeline: ``status --json`` carries
``bus_health`` with every hop measured once trading starts, sane quantiles and no gaps;
a hop over its (here forced, tiny) bound is flagged and warned about without halting
trading; ``status --watch`` redraws in place on a terminal (a pty), prints successive
snapshots when piped, and Ctrl-C ends it with exit 0."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.supervisor.watch import CLEAR_HOME
from shared import hops
from tests.helpers import (
    REPO,
    SUPERVISOR,
    Pipeline,
    base_config,
    started_pipeline,
    wait_for,
    write_config,
)

FORCED = hops.MARKETDATA  # its p99 is tens of µs at best: 0.001 ms is always exceeded


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with started_pipeline(tmp_path_factory.mktemp("bushealth"),
                          supervisor={"hop_p99_bounds_ms": {FORCED: 0.001}}) as p:
        yield p


def _hop(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in doc["bus_health"]["hops"] if h["hop"] == name)


def test_status_json_has_bus_health_once_trading(pipeline: Pipeline) -> None:
    def ordered() -> dict[str, Any] | None:
        doc = pipeline.status()
        ok = (doc["trading"]["state"] == "TRADING"
              and _hop(doc, hops.INTENT_TO_ORDER)["1m"]["count"] >= 1
              and _hop(doc, hops.EXECUTOR_TO_EXCHANGE)["1m"]["count"] >= 1
              and _hop(doc, FORCED)["1m"]["count"] >= 5)
        return doc if ok else None

    doc = wait_for(ordered, timeout=90, interval=1.0, what="orders measured on every hop")
    health = doc["bus_health"]
    assert [h["hop"] for h in health["hops"]] == [*hops.PIPELINE, "bus→supervisor"]
    measured = [h for h in health["hops"] if h["1m"]["count"]]
    # WebSocket books carry no exchange stamp: that hop may be empty; every other is not
    assert {h["hop"] for h in measured} >= set(hops.BOUNDABLE) - {hops.EXCHANGE_TO_MARKETDATA}
    for h in measured:
        for window in ("1m", "15m"):
            w = h[window]
            assert 0 <= w["p50_ms"] <= w["p99_ms"] <= w["max_ms"], (h["hop"], w)
            assert w["per_s"] > 0
        assert h["15m"]["count"] >= h["1m"]["count"]
    actors = {a["actor"]: a for a in health["actors"]}
    for name in ("marketdata", "strategy", "risk", "executor", "recorder", "bus"):
        assert actors[name]["published"] > 0, name
    # a normal session loses nothing: no publisher's sequence has a hole here, and no
    # actor's own subscriber saw one
    assert all(a["gaps"] == 0 and a["lost"] == 0 for a in health["actors"]), health["actors"]
    assert all(a["subscriber"]["gaps"] == 0 for a in health["actors"] if a["subscriber"])
    assert health["proxy"]["dropped"] == 0
    assert health["recorder"]["flush_lag_ms"] is not None
    assert health["queue_depth"]["available"] is False


def test_a_hop_over_its_bound_is_flagged_and_warned_not_halted(pipeline: Pipeline) -> None:
    def flagged() -> dict[str, Any] | None:
        doc = pipeline.status()
        return doc if _hop(doc, FORCED)["over_bound"] and doc["trading"][
            "state"] == "TRADING" else None

    doc = wait_for(flagged, timeout=90, interval=1.0, what="the forced hop flagged")
    assert _hop(doc, FORCED)["bound_ms"] == 0.001
    assert _hop(doc, "bus→supervisor")["bound_ms"] == 250.0  # the default elsewhere
    assert any(s.startswith(f"{FORCED} p99 ") for s in doc["bus_health"]["slow_hops"])
    assert f"warn:bus:slow hop {FORCED} p99" in " ".join(doc["trading"]["reasons"])
    text = pipeline.cli("status").stdout
    assert "bus health" in text and "WARN slow hop: marketdata" in text
    section = text[text.index("bus health"):]
    row = next(line for line in section.splitlines() if line.startswith(f"{FORCED} "))
    assert row.endswith("SLOW")
    assert max(len(line) for line in section.splitlines()) <= 80


def _read_until(fd: int, pred: Any, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred(buf):
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty's other side closed
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_watch_redraws_in_place_on_a_terminal_and_ctrl_c_exits_0(pipeline: Pipeline) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a terminal, as an operator runs it
        try:
            os.chdir(REPO)
            os.execv(SUPERVISOR[0], [*SUPERVISOR, "--config", str(pipeline.config),
                                     "status", "--watch", "--interval", "0.5"])
        finally:
            os._exit(127)  # never back into pytest
    try:
        clear = CLEAR_HOME.encode()
        out = _read_until(fd, lambda b: b.count(clear) >= 3 and b.rstrip().endswith(b")")
                          or b.count(clear) >= 4, timeout=60)
        assert out.count(clear) >= 3, out[-2000:]
        last = out.split(clear)[-2]  # a whole frame
        assert b"bus health" in last and b"bus\xe2\x86\x92supervisor" in last
        os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline
        _read_until(fd, lambda b: False, timeout=3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_watch_piped_prints_snapshots_separated_by_a_blank_line(pipeline: Pipeline) -> None:
    proc = subprocess.Popen([*SUPERVISOR, "--config", str(pipeline.config), "status",
                             "--watch", "--interval", "0.3"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        out = _read_until(proc.stdout.fileno(), lambda b: b.count(b"btcbot status at") >= 3,
                          timeout=60)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (out + rest).decode()
    assert "\x1b[" not in text  # no escape codes into a file or pipe
    frames = text.split("\nbtcbot status at ")
    assert len(frames) >= 3
    assert all(f.endswith("\n") for f in frames[:-1])  # each followed by a blank line
    assert all("bus health" in f for f in frames[:2])


def test_watch_survives_a_stopped_supervisor(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, base_config(tmp_path))  # nothing started on it
    proc = subprocess.Popen([*SUPERVISOR, "--config", str(cfg), "status", "--watch",
                             "--interval", "0.2"], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        out = _read_until(proc.stdout.fileno(), lambda b: b.count(b"not running") >= 2, 30)
        assert out.count(b"not running (watching)") >= 2
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
