"""Pytest fixtures that run the exchange simulator as a real subprocess.

Usage (conftest.py): ``from tests.sim_fixtures import sim, sim_process  # noqa: F401``.
``sim_process`` (session scope) starts ``python -m exchange_sim --port 0`` and waits
until it accepts connections; ``sim`` (function scope) resets it before and after each
test (balances, orders, faults, order log, walk) and hands over a ``SimProcess`` with
small synchronous admin helpers.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SIM_API_KEY = "sim-api-key"
SIM_API_SECRET = "YnRjYm90LWV4Y2hhbmdlLXNpbS1zZWNyZXQtdjEhIQ=="


class SimProcess:
    def __init__(self, proc: subprocess.Popen[str], host: str, port: int) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.api_key = SIM_API_KEY
        self.api_secret = SIM_API_SECRET

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read() or b"null")

    def reset(self, balances: dict[str, str] | None = None) -> None:
        self.admin("POST", "/sim/reset", {"balances": balances} if balances else {})

    def add_fault(self, **spec: Any) -> list[int]:
        return self.admin("POST", "/sim/faults", spec)["ids"]

    def clear_faults(self) -> None:
        self.admin("DELETE", "/sim/faults")

    def set_walk(self, enabled: bool) -> None:
        self.admin("POST", "/sim/market", {"random_walk": enabled})

    def set_book(self, symbol: str, bids: list[list[str]], asks: list[list[str]]) -> Any:
        return self.admin("POST", "/sim/book", {"symbol": symbol, "bids": bids, "asks": asks})

    def state(self) -> Any:
        return self.admin("GET", "/sim/state")

    def received_orders(self) -> list[dict[str, Any]]:
        return self.admin("GET", "/sim/received-orders")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _read_listen_line(proc: subprocess.Popen[str], deadline: float) -> int:
    """The simulator prints ``exchange-sim listening on http://H:P ...`` once it listens."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {proc.returncode}")
            if sel.select(timeout=0.05):
                line = proc.stdout.readline()
                if "listening on http://" in line:
                    return int(line.split("listening on http://", 1)[1].split()[0].rsplit(":")[1])
    finally:
        sel.close()
    raise TimeoutError("simulator did not start in time")


def _wait_accepting(host: str, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"simulator not accepting on {host}:{port}")


def start_sim_process(
    *extra_args: str, host: str = "127.0.0.1", timeout_s: float = 10.0,
    rate_limits: bool = False,
) -> SimProcess:
    """Start ``python -m exchange_sim`` on a free port and wait until it accepts.

    Server-side rate limits are off unless asked for: one simulator serves a whole test
    session (and benchmarks), far beyond what one BTCTurk account may send a minute."""
    cmd = [
        sys.executable,
        "-m",
        "exchange_sim",
        "--host",
        host,
        "--port",
        "0",
        "--seed",
        "7",
        "--book-interval-ms",
        "100",
        *([] if rate_limits else ["--no-rate-limits"]),
        *extra_args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    try:
        port = _read_listen_line(proc, deadline)
        _wait_accepting(host, port, deadline)
    except BaseException:
        proc.kill()
        proc.wait(timeout=5)
        raise
    return SimProcess(proc, host, port)


@pytest.fixture(scope="session")
def sim_process() -> Iterator[SimProcess]:
    handle = start_sim_process()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture()
def sim(sim_process: SimProcess) -> Iterator[SimProcess]:
    sim_process.reset()
    yield sim_process
    sim_process.reset()
