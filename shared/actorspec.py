"""What each supervised program *is*: the child specs (OTP child spec, circus Watcher).

The supervisor and replay's isolated pipeline know no actor by name: they loop over
``SPECS``. A new program (a dashboard, say) needs one entry here and nothing else.

A spec holds what does not change between deployments: how to start the program,
how its readiness and liveness are judged, what it depends on, whether others'
messages travel through it, its role and whether it may see exchange credentials.
What an operator tunes (enabled, restart policy, timeouts, nice) lives in the
config's ``[actors.<name>]`` section (``shared.config.ActorSettings``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # argv and mode builders are handed a Config; no import at run time
    from shared.config import Config

Probe = Literal["heartbeat", "http"]
Role = Literal["infrastructure", "exchange", "recorder", "trading", "observer"]


def actor_args(cfg: Config) -> list[str]:
    """Every bus actor reads the same config file and is told the mode."""
    return ["--config", cfg.source_path, "--mode", cfg.mode]


def simulator_args(cfg: Config) -> list[str]:
    sim = cfg.simulator
    return ["--host", sim.host, "--port", str(sim.port), "--seed", str(sim.seed),
            "--api-key", sim.api_key, "--api-secret", sim.api_secret,
            "--book-interval-ms", str(sim.book_interval_ms), "--balances", sim.balances,
            # paper mode keeps one account across restarts; dry-run needs only its books
            *(["--state", str(cfg.path(sim.state_file))] if cfg.mode == "paper" else []),
            *([] if sim.rate_limits else ["--no-rate-limits"]),
            *(["--fee-schedule", sim.fee_schedule] if sim.fee_schedule else [])]


def simulator_url(cfg: Config) -> str:
    """Answered by the simulator once it serves; its liveness probe. Not an exchange
    API: an outage injected into those (/sim/faults) is the simulated exchange's, and
    must not get the simulator process judged dead and restarted."""
    return f"http://{cfg.simulator.host}:{cfg.simulator.port}/health"


def always(cfg: Config) -> bool:
    return True


def never(cfg: Config) -> bool:
    return False


def when_simulated(cfg: Config) -> bool:
    return cfg.runs_simulator


def when_webhooks(cfg: Config) -> bool:
    return bool(cfg.alerts.webhooks)


def when_recorder_required(cfg: Config) -> bool:
    return cfg.recorder.required


@dataclass(frozen=True)
class ActorSpec:
    name: str
    module: str  # started as ``python -m <module> <args(cfg)>``
    args: Callable[[Config], list[str]] = actor_args
    # "heartbeat": READY and alive judged from its heartbeats on the bus;
    # "http": it is not on the bus, so an HTTP GET of probe_url(cfg) answering 200 is both.
    probe: Probe = "heartbeat"
    probe_url: Callable[[Config], str] | None = None
    # Others' heartbeats travel through it: its restart grants everyone a grace period,
    # nobody is judged late while it is unhealthy, and it is stopped last.
    infrastructure: bool = False
    role: Role = "trading"
    # Started (and READY) before this one; stopped after it.
    depends_on: tuple[str, ...] = ()
    runs_in: Callable[[Config], bool] = always  # wanted in this config's mode?
    # Off unless the config enables it: an observer that binds a TCP port should not
    # appear in every pipeline a test or a replay starts.
    enabled_by_default: bool = True
    # Its being down halts trading, and giving up on it sets the kill switch. Observers
    # (alerts, dashboard) are off the trading path: a dead webhook must not stop a bot.
    critical: Callable[[Config], bool] = always
    secrets: bool = False  # the only kind of child whose environment holds credentials
    nice: int = 0  # default CPU priority (0-19); [actors.<name>].nice overrides
    # Where its log lines go, in the log dir: runtime actors write <name>.log (loguru,
    # rotated); a program without our logging has only its captured output, <name>.out.
    log_suffix: str = ".log"
    description: str = field(default="", compare=False)

    @property
    def log_name(self) -> str:
        return self.name + self.log_suffix


# In start order (a dependency always comes first); stopped in reverse.
SPECS: tuple[ActorSpec, ...] = (
    ActorSpec("bus", "bus", infrastructure=True, role="infrastructure",
              description="the XSUB/XPUB proxy"),
    ActorSpec("exchange-sim", "exchange_sim", args=simulator_args, probe="http",
              probe_url=simulator_url, role="exchange", runs_in=when_simulated, log_suffix=".out",
              description="BTCTurk-compatible simulator (paper mode, dry-run market data)"),
    # Off the tick-to-order path: a lower CPU priority keeps ticks from waiting on them.
    ActorSpec("recorder", "actors.recorder", role="recorder", depends_on=("bus",), nice=10,
              critical=when_recorder_required,
              description="every bus message to segment files"),
    ActorSpec("executor", "actors.executor", depends_on=("bus", "exchange-sim"), secrets=True,
              description="the only owner of the DB and the authenticated client"),
    ActorSpec("marketdata", "actors.marketdata", depends_on=("bus", "exchange-sim"),
              description="order books, feed freshness, exchange rules"),
    ActorSpec("risk", "actors.risk", depends_on=("bus", "executor"),
              description="gates and limits on every intent"),
    ActorSpec("strategy", "actors.strategy", depends_on=("bus", "risk", "marketdata"),
              description="intents from books"),
    ActorSpec("reconciler", "actors.reconciler", role="observer",
              depends_on=("bus", "executor"), nice=10,
              description="periodic reconcile, safety latch, PnL"),
    ActorSpec("alerts", "actors.alerts", role="observer", depends_on=("bus",), nice=10,
              runs_in=when_webhooks, critical=never,
              description="webhook alerts (runs only with a webhook configured)"),
    ActorSpec("dashboard", "actors.dashboard", role="observer", depends_on=("bus",), nice=10,
              enabled_by_default=False, critical=never, description="the web dashboard"),
)

BY_NAME: dict[str, ActorSpec] = {s.name: s for s in SPECS}
ACTOR_NAMES: tuple[str, ...] = tuple(BY_NAME)


def spec(name: str) -> ActorSpec:
    """KeyError for a name no spec has (config validation refuses those first)."""
    return BY_NAME[name]


def start_order(names: Iterable[str]) -> list[str]:
    """``names`` ordered so that every dependency (also in ``names``) comes first; ties
    keep the table's order. A dependency that is not in ``names`` (disabled) is ignored:
    whoever needs it fails closed on its own."""
    wanted = set(names)
    done: list[str] = []
    pending = [s for s in SPECS if s.name in wanted]
    while pending:
        ready = next((s for s in pending
                      if all(d in done or d not in wanted for d in s.depends_on)), None)
        if ready is None:
            raise ValueError("dependency cycle among " + ", ".join(s.name for s in pending))
        done.append(ready.name)
        pending.remove(ready)
    return done
