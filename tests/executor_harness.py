"""Real-process harness for executor/reconciler tests: bus + executor (+ reconciler)
processes against the simulator (tests/sim_fixtures.py), driven with a RequestClient."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bus.auth import BusAuth, ensure_keys, keys_dir_of, load_for
from bus.messages import Msg, OrderRequest, PortfolioSnapshot, ReplyBody, SnapshotQuery, SubmitOrder
from bus.roles import callers, command_name
from bus.transport import RequestClient, RequestFailed
from shared.config import load_config
from shared.ids import client_order_id
from tests.helpers import deep_merge, to_toml
from tests.sim_fixtures import SimProcess

REPO = Path(__file__).resolve().parent.parent
PREFIX = "bb"
BID, ASK = "3599000", "3601000"


def order(intent: str, price: str = "3500000", qty: str = "0.0001", side: str = "buy",
          ttl_s: float = 600.0) -> OrderRequest:
    return OrderRequest(intent_id=intent, client_order_id=client_order_id(PREFIX, intent),
                        symbol="BTCTRY", side=side, order_type="limit",  # type: ignore[arg-type]
                        price=Decimal(price), quantity=Decimal(qty), ttl_s=ttl_s, reason="test")


class Rig:
    """bus + executor (+ reconciler) on a private runtime dir."""

    def __init__(self, tmp: Path, sim: SimProcess | None, mode: str = "paper",
                 **overrides: Any) -> None:
        self.tmp = tmp
        self.sim = sim
        doc: dict[str, Any] = {
            "mode": mode,
            "runtime_dir": str(tmp / "run"),
            "log_dir": str(tmp / "logs"),
            "data_dir": str(tmp / "data"),
            "marketdata": {"symbols": ["BTCTRY"]},
            "executor": {"db_path": str(tmp / "data" / "exec.db"), "settle_window_s": 3.0,
                         "probe_backoff_initial_s": 0.1, "probe_backoff_max_s": 0.5,
                         "order_poll_interval_s": 0.2, "balance_refresh_s": 1.0},
            "reconciler": {"interval_s": 0.3, "failure_threshold": 3,
                           "request_timeout_s": 3.0, "incident_min_interval_s": 0.1},
        }
        if sim is not None:
            doc["exchange"] = {"rest_url": sim.base_url, "ws_url": sim.ws_url,
                               "api_key": sim.api_key, "api_secret": sim.api_secret,
                               "timeout_s": 1.0}
        doc = deep_merge(doc, overrides)
        self.config = tmp / "supervisor.toml"
        self.config.write_text(to_toml(doc))
        self.cfg = load_config(self.config)
        # What the supervisor does at its first start: a keypair per identity.
        ensure_keys(keys_dir_of(self.cfg.data_path))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ctx = zmq.asyncio.Context()

    def auth(self, identity: str = "operator") -> BusAuth:
        """``identity``'s keys (a test on the bus acts as some actor or the operator)."""
        return load_for(self.cfg.data_path, identity)

    def spawn(self, module: str, name: str, env: dict[str, str] | None = None) -> None:
        log = open(self.tmp / f"{name}.out", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(self.config)], cwd=REPO,
            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)

    def start_bus(self) -> None:
        self.spawn("bus", "bus")
        deadline = time.monotonic() + 10
        while not (self.tmp / "run" / "bus.out").exists():
            assert time.monotonic() < deadline, "bus did not start"
            time.sleep(0.02)

    def start_executor(self, crash_at: str | None = None, wait_ready: bool = True) -> None:
        env = {"BTCBOT_TEST_CRASH_AT": crash_at} if crash_at else {}
        if not crash_at:
            env["BTCBOT_TEST_CRASH_AT"] = ""
        self.spawn("actors.executor", "executor", env)
        if wait_ready:
            self.wait_ready()

    def start_reconciler(self) -> None:
        self.spawn("actors.reconciler", "reconciler")

    def wait_ready(self, timeout: float = 20.0) -> PortfolioSnapshot:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            proc = self.procs["executor"]
            assert proc.poll() is None, f"executor exited {proc.returncode}: {self.log()}"
            try:
                snap = self.request(SnapshotQuery(), timeout=0.5, retries=0)
                if isinstance(snap, PortfolioSnapshot) and not snap.recovering:
                    return snap
                last = snap
            except RequestFailed as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"executor not ready: {last!r}\n{self.log()}")

    def wait_exit(self, name: str = "executor", timeout: float = 15.0) -> int:
        return self.procs[name].wait(timeout=timeout)

    def kill(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)

    def log(self, name: str = "executor") -> str:
        path = self.tmp / f"{name}.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def request(self, body: Msg, *, request_id: str | None = None, timeout: float = 3.0,
                retries: int = 1, actor: str = "executor",
                as_: str | None = None) -> ReplyBody | None:
        """``body`` to ``actor``, as ``as_`` or else the first identity the roles
        table lets send it there (risk for orders, the supervisor for latches…)."""
        caller = as_ or callers(actor, command_name(body))[0]

        async def go() -> ReplyBody | None:
            client = RequestClient(self.ctx, self.cfg.command_endpoint(actor),
                                   load_for(self.cfg.data_path, caller), server=actor,
                                   timeout_s=timeout, retries=retries)
            try:
                return await client.request(body, request_id=request_id)
            finally:
                client.close()
        return asyncio.run(go())

    def submit(self, req: OrderRequest, **kw: Any) -> ReplyBody | None:
        return self.request(SubmitOrder(order=req), **kw)

    def snapshot(self) -> PortfolioSnapshot:
        snap = self.request(SnapshotQuery())
        assert isinstance(snap, PortfolioSnapshot)
        return snap

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.ctx.destroy(linger=0)


def received(sim: SimProcess, cid: str) -> list[dict[str, Any]]:
    return [r for r in sim.received_orders() if r.get("newOrderClientId") == cid]


def sim_open_cids(sim: SimProcess) -> set[str]:
    state = sim.state()
    orders = state.get("open_orders", state.get("openOrders", []))
    out = set()
    for o in orders:
        cid = o.get("orderClientId") or o.get("client_id") or o.get("newOrderClientId")
        if cid:
            out.add(cid)
    return out


def deterministic_book(sim: SimProcess) -> None:
    sim.set_walk(False)
    sim.set_book("BTCTRY", [[BID, "0.5"]], [[ASK, "0.5"]])
