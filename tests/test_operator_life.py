"""An operator's exchange trouble, on real processes (issue 15): a paper session meets a
503 answer to every API call and then a SIGKILL of the simulator. Status leaves TRADING
within 5 s of the outage naming the exchange; orders are accepted again within 30 s of
the outage's end and within 40 s of the SIGKILL, with no operator, no latch, no executor
restart and no client order id sent twice."""

from __future__ import annotations

import json
import os
import signal
import time
import tomllib
import urllib.request
from collections import Counter
from typing import Any

import pytest

from tests.helpers import wait_for


def _sim(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def _received(port: int) -> list[dict[str, Any]]:
    return list(_sim(port, "GET", "/sim/received-orders"))


def _accepted_after(port: int, mono_s: float) -> list[dict[str, Any]]:
    """Orders the simulator accepted after ``mono_s`` (CLOCK_MONOTONIC is the host's)."""
    return [o for o in _received(port) if o["outcome"] == "accepted"
            and o["received_mono_ns"] > mono_s * 1e9]


@pytest.mark.parametrize("outage_s", [
    6.0,  # CI's short form
    pytest.param(20.0, marks=pytest.mark.slow),  # the 20 s outage
])
def test_exchange_outage_and_a_killed_simulator_trade_again_without_an_operator(
        make_pipeline, outage_s: float) -> None:
    p = make_pipeline()
    port = int(tomllib.loads(p.config.read_text())["simulator"]["port"])
    p.start()
    wait_for(lambda: _accepted_after(port, 0), timeout=60, interval=1.0,
             what="a first accepted order")
    wait_for(lambda: p.status()["trading"]["state"] == "TRADING", timeout=30, interval=0.5,
             what="TRADING before the outage")

    # 1. Every API call answers 503 for outage_s.
    _sim(port, "POST", "/sim/faults", {"kind": "http_500", "status": 503,
                                       "duration_s": outage_s})
    t0 = time.monotonic()
    doc = wait_for(lambda: (d := p.status())["trading"]["state"] != "TRADING" and d,
                   timeout=15, interval=0.2, what="status leaving TRADING")
    left_after = time.monotonic() - t0
    print(f"status left TRADING {left_after:.1f}s into the outage: "
          f"{doc['trading']['state']} {doc['trading']['reasons']}")
    assert left_after <= 5.0, doc["trading"]
    assert any("exchange" in r for r in doc["trading"]["reasons"]), doc["trading"]
    end = t0 + outage_s
    wait_for(lambda: _accepted_after(port, end), timeout=end + 30 - time.monotonic(),
             interval=0.5, what="an order accepted within 30 s of the outage's end")
    print(f"accepted again {time.monotonic() - end:.1f}s after the outage's end")
    before_kill = _received(port)

    # 2. SIGKILL of the simulator: the supervisor restarts it on the same account.
    sim_pid = p.pids()["exchange-sim"]
    os.kill(sim_pid, signal.SIGKILL)
    t1 = time.monotonic()
    wait_for(lambda: p.pids().get("exchange-sim") not in (None, sim_pid), timeout=30,
             interval=0.3, what="the simulator restarted")
    # The restarted simulator's log starts empty: every accepted order in it is new.
    wait_for(lambda: _accepted_after(port, t1), timeout=40, interval=0.5,
             what="an order accepted within 40 s of the SIGKILL")
    print(f"accepted again {time.monotonic() - t1:.1f}s after the SIGKILL")

    sent = Counter(o["newOrderClientId"] for o in before_kill + _received(port))
    assert [c for c, n in sent.items() if n > 1] == [], "a client order id was sent twice"
    doc = wait_for(lambda: (d := p.status())["trading"]["state"] == "TRADING" and d,
                   timeout=30, interval=0.5, what="TRADING again")
    latch = doc["latch"]
    assert not (latch["kill_switch"] or latch["safety_latch"] or latch["paused"]), latch
    executor = next(a for a in doc["actors"] if a["name"] == "executor")
    assert executor["restarts"] == 0, executor
