"""The simulator's persistent paper account (--state) and its network exposure rules."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from exchange_sim import SimOptions, Simulator
from exchange_sim.engine import OrderRequest
from exchange_sim.ids import ID_BLOCK
from exchange_sim.state_store import StateError
from shared.btcturk import BtcTurkClient

try:
    from tests.sim_fixtures import REPO_ROOT, start_sim_process
except ImportError:
    from sim_fixtures import REPO_ROOT, start_sim_process  # type: ignore[no-redef]


def _sim(path: Path) -> Simulator:
    return Simulator(SimOptions(seed=3, random_walk=False, state_path=str(path)))


def _place(sim: Simulator, client_id: str, price: str, qty: str = "1") -> int:
    req = OrderRequest("SOLTRY", "buy", "limit", Decimal(price), Decimal(qty), client_id)
    order = sim.engine.submit(req)
    sim.persist()
    return order.id


def _crash(sim: Simulator) -> None:
    """Drop the store the way a SIGKILL does: no final save, the kernel frees the lock."""
    assert sim.store is not None
    sim.store.conn.close()
    os.close(sim.store._lock_fd)
    sim.store = None


def test_state_file_is_single_writer(tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    sim = _sim(path)
    with pytest.raises(StateError, match="in use"):
        _sim(path)
    asyncio.run(sim.stop())
    asyncio.run(_sim(path).stop())


def test_account_continues_across_a_clean_restart(tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    sim = _sim(path)
    now = sim.now_ms()
    sim.market.set_book("SOLTRY", [[Decimal("7000"), Decimal("10")]],
                        [[Decimal("7100"), Decimal("0.4")]], now)
    taker = _place(sim, "take", "7100")  # 0.4 fills at 7100, 0.6 rests
    resting = _place(sim, "rest", "6900")
    cancelled = _place(sim, "gone", "6800")
    sim.engine.cancel(cancelled)
    sim.persist()
    before_balances = sim.engine.balances_json()
    before_fills = [f.id for f in sim.engine.fills]
    asyncio.run(sim.stop())

    again = _sim(path)
    e = again.engine
    assert [b["free"] for b in e.balances_json()] == [b["free"] for b in before_balances]
    assert [b["locked"] for b in e.balances_json()] == [b["locked"] for b in before_balances]
    assert e.orders[taker].status == "Partial" and e.orders[taker].left == Decimal("0.6")
    assert e.orders[resting].status == "Untouched"
    assert e.orders[cancelled].status == "Canceled"
    assert {o.id for o in e.open_orders["SOLTRY"]} == {taker, resting}
    assert [f.id for f in e.fills] == before_fills
    new_id = _place(again, "next", "6700")
    assert new_id > max(taker, resting, cancelled)
    asyncio.run(again.stop())


def test_ids_never_repeat_even_after_reset_and_without_a_clean_stop(tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    sim = _sim(path)
    first = _place(sim, "a", "6000")
    sim.reset(None)  # admin reset: a fresh account, the counters go on
    second = _place(sim, "b", "6000")
    assert second > first
    _crash(sim)  # no final save: as after a SIGKILL
    again = _sim(path)
    third = _place(again, "c", "6000")
    assert third > second and third - first <= 2 * ID_BLOCK
    assert list(again.engine.orders) == [second, third]  # the reset account, continued
    asyncio.run(again.stop())


def test_a_forgotten_order_stays_forgotten_after_a_crash(tmp_path: Path) -> None:
    """The vanish fault (`forget`) is durable: a restart from the state file does not
    bring the order back, and its reserved funds stay released."""
    path = tmp_path / "sim.db"
    sim = _sim(path)
    kept = _place(sim, "kept", "6000")
    _place(sim, "lost", "6001")
    locked_before = sim.engine.account.locked["TRY"]
    sim.engine.forget("lost")
    sim.persist()
    _crash(sim)
    again = _sim(path)
    assert [o.client_id for o in again.engine.orders.values()] == ["kept"]
    assert [o.id for o in again.engine.open_orders["SOLTRY"]] == [kept]
    assert again.engine.account.locked["TRY"] < locked_before
    assert again.engine.account.locked["TRY"] == sim.engine.account.locked["TRY"]
    asyncio.run(again.stop())


def test_balances_option_only_seeds_a_new_account(tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    sim = Simulator(SimOptions(random_walk=False, state_path=str(path),
                               balances={"TRY": Decimal("500")}))
    asyncio.run(sim.stop())
    again = Simulator(SimOptions(random_walk=False, state_path=str(path),
                                 balances={"TRY": Decimal("999999")}))
    assert again.engine.account.free["TRY"] == Decimal("500")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    asyncio.run(again.stop())


def test_sigkill_then_restart_continues_the_account(tmp_path: Path) -> None:
    """A real process, killed with SIGKILL right after its answers: nothing it answered
    is lost, and ids keep growing."""
    path = tmp_path / "sim.db"

    async def trade(base_url: str, key: str, secret: str, tag: str) -> list[int]:
        async with BtcTurkClient(base_url, key, secret) as c:
            book = await c.order_book("BTCTRY", 1)
            low = book.bids[0].price - 50_000
            ids = []
            for i in range(3):
                ack = await c.submit_order(
                    "BTCTRY", "buy", "limit", Decimal("0.0001"), low, f"{tag}-{i}"
                )
                ids.append(ack.id)
            return ids

    seen: list[int] = []
    for run in range(2):
        proc = start_sim_process("--state", str(path))
        try:
            ids = asyncio.run(trade(proc.base_url, proc.api_key, proc.api_secret, f"r{run}"))
            state = proc.state()
            open_ids = {o["id"] for o in state["open_orders"]}
            assert set(seen) | set(ids) <= open_ids  # the last run's orders still rest
            assert not set(ids) & set(seen)
            seen += ids
        finally:
            os.kill(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait(timeout=5)
    assert len(set(seen)) == 6


def _run_sim(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("BTCBOT_SIM_ADMIN_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "exchange_sim", "--port", "0", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )


def test_non_loopback_host_is_refused_without_allow_remote() -> None:
    result = _run_sim("--host", "0.0.0.0")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    result = _run_sim("--host", "0.0.0.0", "--allow-remote")
    assert result.returncode == 2 and "--admin-token" in result.stderr


def test_allow_remote_requires_the_admin_token() -> None:
    proc = start_sim_process("--allow-remote", "--admin-token", "s3cret", host="0.0.0.0")
    try:
        url = f"http://127.0.0.1:{proc.port}/sim/state"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=5)
        req = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        # The exchange API itself is not behind the admin token.
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/api/v2/server/time") as r:
            assert r.status == 200
    finally:
        proc.stop()
