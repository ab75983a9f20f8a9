"""Pipelines run by the supervisor program, each in a directory of its own.

``SupervisedPipeline`` drives ``btcbot-supervisor --config PATH`` (start --detach,
status, stop, any other verb) as a subprocess: the one way this project starts a
whole pipeline outside ``start`` itself. Replay's isolated pipelines, the
multi-process tests and the benchmarks all use it, so the process management
(start order, readiness, restarts, stop and cleanup) is the supervisor's, never a
copy of it.

``IsolatedPipeline``: a throw-away pipeline (own temp runtime/log/data dirs, own
bus, dry-run executor with a temp DB -- in ``replay_mirror`` mode for --verify --,
strategy, risk). It never uses the live runtime dir, DB or bus endpoints: every path
is inside its temp dir and the bus endpoints are forced to ipc:// in that dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from bus.auth import ensure_keys, keys_dir_of
from bus.roles import IDENTITIES, REPLAY
from replay.errors import ReplayError
from shared.actorspec import ACTOR_NAMES, BY_NAME
from shared.config import Config, load_config, to_toml

SUPERVISOR = (sys.executable, "-m", "actors.supervisor")
PIPELINE_ACTORS = ("executor", "risk", "strategy")
# Never handed to an isolated pipeline's processes: it must not be able to trade for real.
SCRUBBED_ENV = ("BTCTURK_API_KEY", "BTCTURK_API_SECRET", "BTCBOT_LIVE_TRADING",
                "BTCBOT_LIVE_TRADING_ACK", "BTCBOT_CONFIG")


class PipelineError(ReplayError):
    """The supervisor did not start the pipeline (its output says why)."""


class SupervisedPipeline:
    """``btcbot-supervisor --config CONFIG ...`` as a subprocess. ``with p: ...`` starts
    (``start --detach``, all READY) and stops it."""

    def __init__(self, config: str | os.PathLike[str], env: Mapping[str, str] | None = None,
                 *, cwd: str | os.PathLike[str] | None = None,
                 start_timeout_s: float = 90.0) -> None:
        self.config = Path(config)
        self.env = dict(os.environ if env is None else env)
        self.env.pop("BTCBOT_LOG_STDERR", None)
        self.cwd = cwd
        self.start_timeout_s = start_timeout_s

    def cli(self, *args: str, timeout: float = 90.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``input``: what the command reads on stdin (``keys import -``); else none."""
        stdin = {"stdin": subprocess.DEVNULL} if input is None else {"input": input}
        return subprocess.run([*SUPERVISOR, "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env,
                              cwd=self.cwd, check=False, **stdin)  # type: ignore[call-overload]

    def start(self) -> None:
        r = self.cli("start", "--detach", timeout=self.start_timeout_s)
        if r.returncode != 0:
            raise PipelineError(f"pipeline did not start (exit {r.returncode}): "
                                f"{(r.stderr or r.stdout).strip()}")

    def stop(self) -> None:
        self.cli("stop", timeout=60)

    def status(self) -> dict[str, Any]:
        r = self.cli("status", "--json", timeout=30)
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def actor(self, name: str) -> dict[str, Any]:
        return next(a for a in self.status()["actors"] if a["name"] == name)

    def pids(self) -> dict[str, int]:
        return {a["name"]: a["pid"] for a in self.status()["actors"]}

    def __enter__(self) -> SupervisedPipeline:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pipeline_config(
    base: Config | None, root: Path, actors: Iterable[str], *, strategy: dict[str, Any] | None
    = None, risk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The supervisor.toml document of an isolated pipeline rooted at ``root``.

    Taken from ``base``: strategy, risk, executor (but a temp DB), marketdata symbols,
    gates (never live), supervisor timings, logging. Forced: mode dry-run, every path in
    ``root``, ipc bus endpoints in ``root``, only ``actors`` (plus the infrastructure,
    the bus) enabled."""
    enabled = {*actors, *(s.name for s in BY_NAME.values() if s.infrastructure)}
    b = base
    doc: dict[str, Any] = {
        "mode": "dry-run",
        "runtime_dir": str(root / "run"),
        "log_dir": str(root / "logs"),
        "data_dir": str(root / "data"),
        "actors": {n: {"enabled": n in enabled} for n in ACTOR_NAMES},
        "recorder": {"path": str(root / "recordings")},
        "executor": {"db_path": str(root / "data" / "replay.db")},
    }
    if b is not None:
        doc["actors"] = {
            n: {**msgspec.to_builtins(b.actor_settings(n)), "enabled": n in enabled}
            for n in ACTOR_NAMES
        }
        doc["strategy"] = msgspec.to_builtins(b.strategy)
        doc["risk"] = msgspec.to_builtins(b.risk)
        doc["marketdata"] = msgspec.to_builtins(b.marketdata)
        doc["supervisor"] = msgspec.to_builtins(b.supervisor)
        doc["logging"] = msgspec.to_builtins(b.logging)
        gates = msgspec.to_builtins(b.gates)
        gates.update(live_trading=False, live_trading_ack="")
        doc["gates"] = gates
        doc["executor"] = {**msgspec.to_builtins(b.executor),
                           "db_path": str(root / "data" / "replay.db")}
        doc["recorder"] = {**msgspec.to_builtins(b.recorder), "path": str(root / "recordings")}
    if strategy:
        doc["strategy"] = {**doc.get("strategy", {}), **strategy}
    if risk:
        doc["risk"] = {**doc.get("risk", {}), **risk}
    return doc


def _merge(doc: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key, value in extra.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


class IsolatedPipeline(SupervisedPipeline):
    """A throw-away pipeline: ``with IsolatedPipeline(base_cfg) as p: ... p.cfg ...``.
    ``extra`` is merged (deeply) into the generated config."""

    def __init__(
        self,
        base: Config | None = None,
        actors: Iterable[str] = PIPELINE_ACTORS,
        *,
        record: bool = False,
        strategy: dict[str, Any] | None = None,
        risk: dict[str, Any] | None = None,
        keep: bool = False,
        start_timeout_s: float = 90.0,
        extra: dict[str, Any] | None = None,
        root: str | os.PathLike[str] | None = None,
        strategy_boot: int | None = None,
    ) -> None:
        wanted = set(actors) | ({"recorder"} if record else set())
        self.actors = [a for a in ACTOR_NAMES if a in wanted]
        self.keep = keep or root is not None  # a caller's dir is the caller's to remove
        self.root = Path(root) if root is not None else Path(
            tempfile.mkdtemp(prefix="btcbot-replay-"))
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        doc = pipeline_config(base, self.root, self.actors, strategy=strategy, risk=risk)
        doc = _merge(doc, extra or {})
        config_path = self.root / "supervisor.toml"
        config_path.write_text(to_toml(doc))
        self.config_path = config_path
        self.cfg = load_config(config_path)
        # Its own throw-away keys (the supervisor would make all but replay's at its
        # first start): the replay process feeds this bus as the ``replay`` identity.
        ensure_keys(keys_dir_of(self.cfg.data_path), (*IDENTITIES, REPLAY))
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        if strategy_boot is not None:  # the recorded host's boot: the same intent ids
            env["BTCBOT_STRATEGY_BOOT"] = str(strategy_boot)
        super().__init__(config_path, env, start_timeout_s=start_timeout_s)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> IsolatedPipeline:
        super().__enter__()
        return self

    @property
    def recordings(self) -> Path:
        return self.cfg.path(self.cfg.recorder.path)
