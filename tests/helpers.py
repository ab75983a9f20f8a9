"""Helpers for multi-process tests: a config writer and a real supervisor run by
its CLI, on real sockets, in a private temp dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from bus.auth import BusAuth, load_for
from replay.pipeline import SUPERVISOR as _SUPERVISOR
from replay.pipeline import SupervisedPipeline
from shared.actorspec import ACTOR_NAMES
from shared.config import load_config, to_toml

SUPERVISOR = list(_SUPERVISOR)
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out


def base_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    """A fast-reacting paper pipeline on a free port, everything inside ``tmp``."""
    doc: dict[str, Any] = {
        "mode": "paper",
        "runtime_dir": str(tmp / "run"),
        "log_dir": str(tmp / "logs"),
        "data_dir": str(tmp / "data"),
        "simulator": {"port": free_port(), "seed": 11, "book_interval_ms": 100},
        "supervisor": {"backoff_initial_s": 0.05, "backoff_max_s": 1.0,
                       "intensity_max_restarts": 20, "intensity_window_s": 60.0,
                       "stop_timeout_s": 5.0},
        "actors": {name: {"heartbeat_timeout_s": 3.0, "start_timeout_s": 20.0}
                   for name in ACTOR_NAMES},
        "executor": {"db_path": str(tmp / "data" / "btcbot.db")},
        "recorder": {"path": str(tmp / "recordings")},
    }
    return deep_merge(doc, overrides)


def bus_auth(config: Path, identity: str) -> BusAuth:
    """``identity``'s keys in the pipeline of ``config`` (made by its supervisor at
    start): a test that talks to the bus does so as some actor, or the operator."""
    return load_for(load_config(config).data_path, identity)


def write_config(tmp: Path, doc: dict[str, Any], name: str = "supervisor.toml") -> Path:
    path = tmp / name
    path.write_text(to_toml(doc))
    return path


class Pipeline(SupervisedPipeline):
    """A supervisor started with ``start --detach`` and driven through its CLI (the
    project's one pipeline starter, replay/pipeline.py), run from the repo."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(config, {**os.environ, **(env or {})}, cwd=REPO)

    def start(self) -> None:
        r = self.cli("start", "--detach")
        assert r.returncode == 0, f"start failed ({r.returncode}): {r.stdout}\n{r.stderr}"

    def supervisor_pid(self) -> int:
        return int((self.config.parent / "run" / "supervisor.pid").read_text())

    def __enter__(self) -> Pipeline:
        self.start()
        return self


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # the system is moving under us; keep polling
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_using(config: Path, port: int | None = None) -> list[psutil.Process]:
    """Every live process whose command line names this config (or its sim port)."""
    marks = [str(config)] + ([f"--port {port} "] if port else [])
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or []) + " "
        except psutil.Error:
            continue
        if any(m in cmd for m in marks) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def kill_all(config: Path, port: int | None = None) -> None:
    for p in processes_using(config, port):
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


@contextlib.contextmanager
def started_pipeline(tmp: Path, **overrides: Any) -> Iterator[Pipeline]:
    """A paper pipeline on ``base_config(tmp, **overrides)``, started; on exit stopped,
    and every process of it (its simulator included) killed if any is left."""
    doc = base_config(tmp, **overrides)
    p = Pipeline(write_config(tmp, doc))
    try:
        p.start()
        yield p
    finally:
        p.stop()
        kill_all(p.config, doc["simulator"]["port"])
