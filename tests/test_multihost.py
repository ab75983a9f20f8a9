"""Two supervisors on one machine over loopback tcp, as on two hosts (issue 16): host a
runs the bus, the simulator, the recorder, executor, risk and reconciler; host b runs
marketdata and strategy (`start --only`) against a's bus and command sockets. Each host
made its own keys; only public keys crossed (`keys export` / `keys import`). It trades."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Pipeline, base_config, free_port, kill_all, wait_for, write_config

A_ACTORS = "bus,exchange-sim,recorder,executor,risk,reconciler"
B_ACTORS = "marketdata,strategy"


def ok(r: Any) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout}\n{r.stderr}"
    return str(r.stdout)


def test_two_supervisors_on_loopback_tcp_trade(tmp_path: Path) -> None:
    bus = {"pub_endpoint": f"tcp://127.0.0.1:{free_port()}",
           "sub_endpoint": f"tcp://127.0.0.1:{free_port()}",
           "command_endpoints": {"risk": f"tcp://127.0.0.1:{free_port()}",
                                 "executor": f"tcp://127.0.0.1:{free_port()}"}}
    (tmp_path / "a").mkdir(mode=0o700)
    (tmp_path / "b").mkdir(mode=0o700)
    doc_a = base_config(tmp_path / "a", bus=bus)
    doc_b = base_config(tmp_path / "b", bus={**bus, "host_id": "b"},
                        simulator=doc_a["simulator"])  # a's simulator is b's exchange
    a = Pipeline(write_config(tmp_path / "a", doc_a))
    b = Pipeline(write_config(tmp_path / "b", doc_b))
    try:
        ok(a.cli("keys", "init"))
        ok(b.cli("keys", "init"))
        # Public keys only, each way: b's processes into a's roster, a's servers into b's.
        b_keys = ok(b.cli("keys", "export", "--only", "marketdata@b,strategy@b,supervisor@b"))
        ok(a.cli("keys", "import", "-", input=b_keys))
        ok(b.cli("keys", "import", "-", input=ok(a.cli("keys", "export", "--only",
                                                        "bus,risk,executor"))))
        ok(a.cli("start", "--detach", "--only", A_ACTORS))
        ok(b.cli("start", "--detach", "--only", B_ACTORS))
        assert {x["name"] for x in b.status()["actors"]} == set(B_ACTORS.split(","))

        def traded() -> dict[str, Any] | None:
            doc = a.status()
            ex = next(x for x in doc["actors"] if x["name"] == "executor")["counters"]
            filled = [p for p in doc["positions"] if Decimal(p["quantity"]) != 0]
            return doc if ex.get("committed", 0) >= 1 and filled else None

        doc = wait_for(traded, timeout=90, interval=1.0,
                       what="orders from b's strategy filled through a's executor")
        assert doc["trading"]["state"] == "TRADING", doc["trading"]
        strategy = next(x for x in b.status()["actors"] if x["name"] == "strategy")
        assert strategy["ready"] and strategy["counters"].get("intents", 0) >= 1
        # Authenticated end to end: nothing was refused on a's side.
        bus_counters = next(x for x in doc["actors"] if x["name"] == "bus")["counters"]
        assert bus_counters.get("proxy_dropped_forbidden_topic", 0) == 0
        assert bus_counters.get("auth_refused_unknown_key", 0) == 0
    finally:
        b.stop()
        a.stop()
        kill_all(b.config)
        kill_all(a.config, doc_a["simulator"]["port"])


@pytest.mark.parametrize("endpoint", ["udp://127.0.0.1:1", "tcp//x"])
def test_a_bus_endpoint_must_be_ipc_or_tcp(tmp_path: Path, endpoint: str) -> None:
    doc = base_config(tmp_path, bus={"pub_endpoint": endpoint})
    r = Pipeline(write_config(tmp_path, doc)).cli("status")
    assert r.returncode == 2 and "bus.pub_endpoint" in r.stderr


def test_only_names_known_actors(tmp_path: Path) -> None:
    r = Pipeline(write_config(tmp_path, base_config(tmp_path))).cli("start", "--only",
                                                                     "marketdata,nope")
    assert r.returncode == 2 and "--only: unknown actor nope" in r.stderr
