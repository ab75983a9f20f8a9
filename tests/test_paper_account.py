"""The paper account over an operator's lifetime: stop/start on the same data/ continues
the simulator's account, and `paper reset` archives it together with the executor DB."""

from __future__ import annotations

import json
import os
import signal
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import wait_for


def _sim_get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _accepted(port: int) -> list[dict[str, Any]]:
    return [o for o in _sim_get(port, "/sim/received-orders") if o["outcome"] == "accepted"]


def test_three_starts_on_the_same_data_each_trade(make_pipeline, tmp_path: Path) -> None:
    p = make_pipeline()
    port = _config_port(p.config)
    order_ids: list[int] = []
    client_ids: list[str] = []
    for run in range(3):
        p.start()
        accepted = wait_for(lambda port=port: _accepted(port), timeout=60, interval=1.0,
                            what=f"an order accepted by the simulator in run {run + 1}")
        state = _sim_get(port, "/sim/state")
        if run > 0:
            assert state["orders_total"] > len(accepted)  # the earlier runs' orders are kept
        doc = p.status()
        executor = next(a for a in doc["actors"] if a["name"] == "executor")
        assert executor["restarts"] == 0, executor
        # The simulator enforces BTCTurk's rate limits; a normal session never trips them.
        for actor in doc["actors"]:
            if actor["name"] in ("executor", "marketdata"):
                assert int(actor["counters"].get("http_429", 0)) == 0, actor
        assert _sim_get(port, "/sim/state")["rate_limited"] == 0
        # A restart never looks like a duplicate: no intent id of an earlier run is
        # reissued (the executor would refuse it as executor:duplicate).
        counters = {a["name"]: a["counters"] for a in doc["actors"]}
        assert counters["executor"].get("duplicates", 0) == 0, counters["executor"]
        assert counters["risk"].get("reason.executor:duplicate", 0) == 0, counters["risk"]
        order_ids += [o["order_id"] for o in accepted]
        client_ids += [o["newOrderClientId"] for o in accepted]
        p.stop()
    assert len(order_ids) == len(set(order_ids)), "an order id repeated across restarts"
    assert len(client_ids) == len(set(client_ids)), "a client order id repeated"
    assert (tmp_path / "data" / "exchange-sim.db").exists()
    # The executor's DB holds every order the simulator accepted, each intent once.
    import apsw
    db = apsw.Connection(str(tmp_path / "data" / "btcbot.db"), flags=apsw.SQLITE_OPEN_READONLY)
    rows = list(db.execute("SELECT client_order_id, intent_id FROM orders"))
    db.close()
    assert set(client_ids) <= {cid for cid, _ in rows}
    intents = [iid for _, iid in rows]
    assert len(intents) == len(set(intents)), "an intent id repeated in the DB"


def _config_port(config: Path) -> int:
    return int(tomllib.loads(config.read_text())["simulator"]["port"])


def test_paper_reset_archives_both_and_refuses_while_running(make_pipeline,
                                                             tmp_path: Path) -> None:
    p = make_pipeline()
    p.start()
    port = _config_port(p.config)
    wait_for(lambda: _accepted(port), timeout=60, interval=1.0, what="an accepted order")
    running = p.cli("paper", "reset", "--yes")
    assert running.returncode == 1 and "running" in running.stderr
    p.stop()

    data = tmp_path / "data"
    assert (data / "btcbot.db").exists() and (data / "exchange-sim.db").exists()
    unconfirmed = p.cli("paper", "reset")  # no tty, no --yes: nothing happens
    assert unconfirmed.returncode != 0
    assert (data / "btcbot.db").exists()

    done = p.cli("paper", "reset", "--yes")
    assert done.returncode == 0, done.stderr
    archives = list((data / "archive").iterdir())
    assert len(archives) == 1 and archives[0].name.startswith("paper-reset-")
    archived = {f.name for f in archives[0].iterdir()}
    assert {"btcbot.db", "exchange-sim.db"} <= archived
    assert not (data / "btcbot.db").exists() and not (data / "exchange-sim.db").exists()

    # A fresh account trades again.
    p.start()
    wait_for(lambda: _accepted(port), timeout=60, interval=1.0, what="an order after reset")
    assert _sim_get(port, "/sim/state")["orders_total"] == len(_accepted(port))


def test_sigkilled_simulator_continues_the_same_account(make_pipeline) -> None:
    """SIGKILL the exchange-sim mid-session: the supervisor restarts it on the same state
    file, the account continues (no order it answered is lost, no id is reused) and
    orders are accepted again, without an executor restart. Risk's cooldown is 5 s (the
    default 60 s per symbol would make "accepted again" measure risk, not the simulator)."""
    p = make_pipeline({"risk": {"cooldown_s": 5.0}})
    p.start()
    port = _config_port(p.config)
    wait_for(lambda: _accepted(port), timeout=60, interval=1.0, what="an accepted order")
    old_pid = p.pids()["exchange-sim"]
    old_ids = {o["order_id"] for o in _accepted(port)}
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: p.pids().get("exchange-sim") not in (None, old_pid), timeout=30,
             interval=0.5, what="the supervisor restarting exchange-sim")
    wait_for(lambda: _accepted(port), timeout=60, interval=1.0,
             what="an order accepted by the restarted simulator")
    new_ids = {o["order_id"] for o in _accepted(port)}
    assert min(new_ids) > max(old_ids)  # ids go on from the durable ceiling
    state = _sim_get(port, "/sim/state")
    assert state["orders_total"] >= len(old_ids) + len(new_ids)  # the old orders are kept
    executor = next(a for a in p.status()["actors"] if a["name"] == "executor")
    assert executor["restarts"] == 0, executor
