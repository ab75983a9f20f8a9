"""One supervised child process: how to start it, what we know about it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psutil

from actors.runtime import set_parent_death_signal
from actors.supervisor.policy import RestartTracker
from bus.messages import ActorInfo
from shared.actorspec import ActorSpec
from shared.config import Config
from shared.plain import plain_builtins


def child_argv(cfg: Config, spec: ActorSpec) -> list[str]:
    """The command line of a child, from its spec."""
    return [sys.executable, "-m", spec.module, *spec.args(cfg)]


def _preexec(nice: int) -> None:
    # Children die with the supervisor, even when it is SIGKILLed.
    set_parent_death_signal(signal.SIGKILL)
    if nice:
        os.nice(nice)


@dataclass
class Heard:
    """The latest heartbeat of the current incarnation."""

    state: str = "STARTING"
    ready: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    info: ActorInfo | None = None
    log_sink: str = ""
    last_mono: float = 0.0


@dataclass
class Child:
    spec: ActorSpec
    tracker: RestartTracker
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    started_mono: float = 0.0
    restarts: int = 0
    heard: Heard = field(default_factory=Heard)
    last_exit: str = ""
    restart_due: float | None = None
    exit_handled: bool = False
    killed_for: str = ""
    cpu_percent: float = 0.0
    rss_bytes: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def heartbeats(self) -> bool:
        """On the bus, judged by its heartbeats (else by its HTTP probe)."""
        return self.spec.probe == "heartbeat"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def spawn(self, cfg: Config, env: dict[str, str]) -> None:
        log_dir = cfg.log_path
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(Path(log_dir) / f"{self.name}.out", "ab")  # crash tracebacks land here
        try:
            self.proc = subprocess.Popen(
                child_argv(cfg, self.spec), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=env, cwd=cfg.base_dir, preexec_fn=partial(_preexec, cfg.actor_nice(self.name)),
                close_fds=True,
                process_group=0,  # Ctrl-C reaches the supervisor only; it stops them in order
            )
        finally:
            out.close()
        self.started_mono = time.monotonic()
        self.heard = Heard(last_mono=self.started_mono)
        self.killed_for = ""
        self.restart_due = None
        self.exit_handled = False
        try:
            self.ps = psutil.Process(self.proc.pid)
            self.ps.cpu_percent(None)  # prime: psutil measures from the previous call
        except psutil.Error:
            self.ps = None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def sample_resources(self) -> None:
        if self.ps is None or not self.running:
            self.cpu_percent, self.rss_bytes = 0.0, 0
            return
        try:
            with self.ps.oneshot():
                self.cpu_percent = self.ps.cpu_percent(None)
                self.rss_bytes = self.ps.memory_info().rss
        except psutil.Error:
            self.cpu_percent, self.rss_bytes = 0.0, 0

    def display_state(self) -> str:
        if self.tracker.gave_up:
            return "GAVE_UP"
        if self.running:
            return self.heard.state
        if self.restart_due is not None:
            return "BACKOFF"
        return "STOPPED"

    def as_status(self, now: float) -> dict[str, object]:
        running = self.running
        return {
            "name": self.name,
            "pid": self.pid,
            "state": self.display_state(),
            "ready": bool(running and self.heard.ready),
            "restarts": self.restarts,
            "uptime_s": round(now - self.started_mono, 3) if running else 0.0,
            "heartbeat_age_s": round(now - self.heard.last_mono, 3) if running else None,
            # A child in BACKOFF has no process: no figure of its dead pid is shown.
            "cpu_percent": round(self.cpu_percent, 2) if running else None,
            "rss_bytes": self.rss_bytes if running else None,
            "counters": dict(self.heard.counters),
            "info": plain_builtins(self.heard.info) if self.heard.info else {},
            "last_exit": self.last_exit,
            "gave_up": self.tracker.gave_up,
        }
