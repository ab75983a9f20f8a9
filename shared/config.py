"""supervisor.toml, decoded into typed structs.

Unknown keys and wrong types are errors that name the field (``ConfigError``,
exit code 2 for every command). Relative paths are resolved against the config
file's directory, so a config and its state travel together. Environment
variables override secrets and gates only, never trading parameters.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from shared.actorspec import ACTOR_NAMES, start_order
from shared.actorspec import spec as actor_spec
from shared.config_ranges import (
    NON_NEGATIVE,
    POSITIVE,
    Bytes,
    Count,
    CountOrOff,
    Hour,
    Millis,
    MillisOrOff,
    Nice,
    Port,
    Seconds,
    SecondsOrOff,
    Symbol,
    ZstdLevel,
    balances_problem,
    bps,
    check_decimals,
    explain,
    fee_schedule_problem,
)
from shared.hops import BOUNDABLE
from shared.sizes import parse_size
from shared.tradingday import BadTimeZone, zone

Mode = Literal["dry-run", "paper", "live"]
RestartPolicy = Literal["always", "on-failure", "never"]
LIVE_ACK = "I_UNDERSTAND"


class ConfigError(Exception):
    """Bad configuration; the message names the offending field."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class BusConfig(_Section):
    # Empty endpoints mean ipc:// sockets inside the runtime dir.
    pub_endpoint: str = ""  # XSUB side: publishers connect here
    sub_endpoint: str = ""  # XPUB side: subscribers connect here
    hwm: Count = 200_000  # libzmq's 0 (no limit) would let a stuck subscriber eat memory
    # Multi-host (docs/security.md): an actor's command socket elsewhere than ipc under
    # the runtime dir, e.g. {risk = "tcp://10.0.0.1:5701"}; the serving host binds the
    # same address its clients connect to. Every socket is CURVE-authenticated.
    command_endpoints: dict[str, str] = msgspec.field(default_factory=dict)
    # A host running a subset of the actors (start --only) names its identities
    # <name>@<host_id> so that its supervisor and CLI keys differ from the main host's;
    # the roles table reads the part before the "@". Empty on the host of the bus.
    host_id: str = ""


class LoggingConfig(_Section):
    level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = False
    rotation: str = "20 MB"
    retention: Count = 5


class GatesConfig(_Section):
    kill_switch: bool = False
    safe_mode: bool = False
    live_trading: bool = False
    live_trading_ack: str = ""


class ExchangeConfig(_Section):
    rest_url: str = ""  # empty: the embedded simulator's URL in paper mode
    ws_url: str = ""
    timeout_s: Seconds = 5.0
    api_key: str = ""
    api_secret: str = ""
    api_secret_file: str = ""  # a 0600 file holding the base64 secret


class SimulatorConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 18_080
    seed: int = 7
    book_interval_ms: Millis = 250
    api_key: str = "sim-api-key"
    # the simulator's own public test secret, not a credential
    api_secret: str = "YnRjYm90LWV4Y2hhbmdlLXNpbS1zZWNyZXQtdjEhIQ=="
    balances: str = "TRY=100000"  # a new paper account's balances (see state_file)
    # Paper mode keeps the simulator's account here, so stop/start continues it
    # (`btcbot-supervisor paper reset` archives it together with the executor DB).
    state_file: str = "data/exchange-sim.db"
    rate_limits: bool = True  # BTCTurk's documented limits, answered with 429 like it does
    # VOLUME:MAKER/TAKER,... (empty: 0.05 % maker / 0.09 % taker, ccxt's BTCTurk figures)
    fee_schedule: str = ""


class ActorSettings(_Section):
    """``[actors.<name>]``: what an operator tunes per child. What the child *is*
    (command, probe, dependencies, role) is its spec in shared/actorspec.py."""

    # Unset: the spec's default (enabled_by_default); resolved by load_config, so after
    # loading it is always a bool. A section that tunes only a timeout enables nothing.
    enabled: bool | None = None
    restart: RestartPolicy = "always"
    heartbeat_timeout_s: Seconds = 5.0
    start_timeout_s: Seconds = 20.0
    # CPU priority below the supervisor's (0-19, as nice(1)); unset: the spec's default
    # (10 for the actors off the tick-to-order path, 0 for the rest).
    nice: Nice | None = None


# A hop's p99 bound: positive, at most an hour (TOML's inf or nan are refused).
HopBoundMs = Annotated[float, msgspec.Meta(gt=0, le=3_600_000.0)]
# The hops that include the exchange's REST round trip (and, for books, its clock offset):
# not ours to make fast, so their default bound is wider (a configured one wins).
EXCHANGE_HOP_BOUNDS_MS = {"exchange→marketdata": 2000.0, "executor→exchange": 2000.0}


class SupervisorConfig(_Section):
    backoff_initial_s: Seconds = 0.1
    backoff_max_s: Seconds = 5.0  # >= backoff_initial_s
    intensity_max_restarts: Count = 5
    intensity_window_s: Seconds = 60.0
    stable_after_s: SecondsOrOff = 10.0
    stop_timeout_s: Seconds = 10.0
    heartbeat_interval_s: Seconds = 1.0
    # Bus health (status's bus_health): a hop whose p99 over the last minute exceeds its
    # bound is flagged and noted (a warning, not a halt: docs/operator-tools.md). The
    # per-hop table overrides the default for the hops it names (shared/hops.py).
    hop_p99_bound_ms: HopBoundMs = 250.0
    hop_p99_bounds_ms: dict[str, float] = msgspec.field(default_factory=dict)

    def hop_bounds(self) -> dict[str, float]:
        """The p99 bound of every hop that has one (shared.hops.BOUNDABLE)."""
        named = {**EXCHANGE_HOP_BOUNDS_MS, **self.hop_p99_bounds_ms}
        return {hop: named.get(hop, self.hop_p99_bound_ms) for hop in BOUNDABLE}


class MarketDataConfig(_Section):
    symbols: list[Symbol] = msgspec.field(default_factory=lambda: ["BTCTRY", "ETHTRY", "SOLTRY"])
    source: Literal["ws", "rest"] = "ws"
    rest_fallback: bool = True
    max_data_age_s: Seconds = 15.0
    rest_poll_interval_s: Seconds = 1.0  # < max_data_age_s
    depth: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10  # levels kept per side
    exchangeinfo_refresh_s: Seconds = 300.0
    # ws mode: a symbol whose WS book is older than this is polled over REST (if
    # rest_fallback); the old bot's ORDERBOOK_MAX_STALENESS_MS.
    ws_stale_s: Seconds = 5.0
    # ws mode without rest_fallback: no WS connection within this at start = fatal.
    ws_connect_timeout_s: Seconds = 10.0
    status_interval_s: Seconds = 1.0  # FeedStatus republished this often (late joiners)
    rules_republish_s: Seconds = 1.0  # SymbolRules republished this often (late joiners)
    # The bus clock: a ClockTick on md.clock this often. Strategy and risk run every
    # time-driven re-evaluation (the throttle's trailing edge) on these ticks instead of
    # local timers, so the recording holds every input of every decision (replay
    # --verify). It bounds how late a trailing evaluation can be.
    clock_tick_ms: MillisOrOff = 100  # 0: no bus clock (nothing trails a throttle)


class ReplayConfig(_Section):
    """Set only by ``replay --verify`` in its isolated pipeline (docs/recordings.md):
    strategy and risk take every input from the replayed recording (decisions and
    intents included) and publish what they decide under ``verify.`` for comparison,
    never to each other."""

    verify: bool = False


class StrategyConfig(_Section):
    """The strategy host's own keys. Every other key of the ``[strategy]`` table is a
    parameter of the plug-in (collected into ``params`` by ``load_config`` and validated
    by the plug-in's Params struct when the strategy actor or the supervisor starts)."""

    # "package.module:ClassName", an installed plug-in's entry point name (group
    # btcbot.strategies) or a shipped one: profit_aware (the old bot's default),
    # inventory_mm. See docs/strategies.md.
    plugin: str = "profit_aware"
    throttle_ms: MillisOrOff = 500
    # After a rejected intent, wait this long before deciding again for that symbol
    # (keeps a blocked gate from turning into a stream of identical rejections).
    reject_backoff_s: SecondsOrOff = 5.0
    snapshot_interval_s: Seconds = 5.0  # executor snapshot refresh (positions, TRY, orders)
    # Every this many seconds of message clock, a symbol with a book gets an on_tick
    # call (0 = never).
    tick_s: SecondsOrOff = 0.0
    params: dict[str, Any] = msgspec.field(default_factory=dict)

    def param(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


STRATEGY_HOST_KEYS = frozenset(StrategyConfig.__struct_fields__)


def split_strategy_table(doc: dict[str, Any]) -> None:
    """Move the plug-in's keys of ``[strategy]`` into ``strategy.params`` (in place), so
    the host's struct can stay strict about its own keys."""
    table = doc.get("strategy")
    if not isinstance(table, dict):
        return
    params = table.get("params", {})
    if not isinstance(params, dict):
        return  # the struct's own validation names it
    params = dict(params)
    for key in [k for k in table if k not in STRATEGY_HOST_KEYS]:
        params[key] = table.pop(key)
    table["params"] = params


class BacktestConfig(_Section):
    """Defaults of ``btcbot-supervisor backtest`` (its flags override them). The fee
    schedule defaults to the simulator's; set your BTCTurk tier's here."""

    # exchange_sim.fees' defaults (ccxt's BTCTurk pair, 0.05 % / 0.09 %): a backtest of a
    # paper session charges what its simulator charged.
    maker_fee_bps: Decimal = Decimal("5")
    taker_fee_bps: Decimal = Decimal("9")
    balances: str = "TRY=100000"  # starting balances, ASSET=AMOUNT,...

    def __post_init__(self) -> None:
        check_decimals(self, {"maker_fee_bps": bps(), "taker_fee_bps": bps()})


class RiskConfig(_Section):
    max_open_orders_per_symbol: Count = 1
    cooldown_s: SecondsOrOff = 60.0
    max_orders_per_minute: Count = 20
    min_order_notional_try: Decimal = Decimal("10")
    max_notional_per_order_try: Decimal = Decimal("0")  # 0 = off
    max_position_try_per_symbol: Decimal = Decimal("5000")
    max_daily_loss_try: Decimal = Decimal("500")
    # The daily loss (drop of net PnL, shared/pnl.py) counts from this local hour in this
    # time zone: BTCTurk's home time by default.
    day_boundary_tz: str = "Europe/Istanbul"
    day_boundary_hour: Hour = 0
    try_cash_reserve: Decimal = Decimal("300")
    cash_asset: str = "TRY"  # the quote asset whose free balance funds buys
    snapshot_interval_s: Seconds = 5.0  # executor snapshot refresh (latches, orders, PnL)
    executor_timeout_s: Seconds = 2.0  # per attempt of a SubmitOrder (Lazy Pirate)
    executor_retries: CountOrOff = 2
    # No executor snapshot (or portfolio message) for this long: latches are unknown,
    # so nothing is approved (fail closed).
    executor_state_max_age_s: Seconds = 30.0

    def __post_init__(self) -> None:
        check_decimals(self, {
            "min_order_notional_try": (NON_NEGATIVE,),
            "max_notional_per_order_try": (NON_NEGATIVE,),  # 0 = off
            "max_position_try_per_symbol": (POSITIVE,),
            # 0 or less would not disable the limit, it would halt at once or never:
            # neither is what an operator means, so both are refused.
            "max_daily_loss_try": (POSITIVE,),
            "try_cash_reserve": (NON_NEGATIVE,),
        })


class ExecutorConfig(_Section):
    db_path: str = "data/btcbot.db"
    client_id_prefix: str = "bb"
    settle_window_s: Seconds = 10.0
    probe_backoff_initial_s: Seconds = 0.5
    probe_backoff_max_s: Seconds = 10.0  # >= probe_backoff_initial_s
    key_retention_s: Seconds = 7 * 24 * 3600.0
    order_poll_interval_s: Seconds = 1.0
    stale_order_ttl_s: Seconds = 120.0
    # FULL: the reservation survives power loss (see actors/executor/db.py); NORMAL only
    # for benchmarks.
    db_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Sends of one key that failed with a provably-not-sent error (429, refused) before the
    # key is FAILED.
    max_send_attempts: Count = 3
    # An open order on the exchange with our client-id prefix and no DB row.
    orphan_policy: Literal["adopt", "cancel"] = "adopt"
    dry_run_fee_bps: Decimal = Decimal("10")  # simulated fee of dry-run fills
    balance_refresh_s: Seconds = 10.0
    reconcile_trade_lookback_s: Seconds = 7 * 24 * 3600.0  # user trades fetched by reconcile
    # The client's token buckets (BTCTurk's published limits). false: benchmarks only.
    client_rate_limit: bool = True
    # Only for `replay --verify` (its isolated pipeline sets it; mode must be dry-run):
    # no exchange calls, no simulated fills, no order/fill/portfolio messages; snapshots
    # mirror the recorded `portfolio` topic and orders are only reserved and accepted.
    replay_mirror: bool = False
    # Paper/live: follow our orders on the private WebSocket (logged in with the
    # credentials, no public channels). An event for one of our orders triggers an
    # immediate REST refresh (REST stays the source of truth). While the socket is
    # connected, logged in and not caught missing an event, the periodic poll runs every
    # ws_poll_interval_s (never faster than order_poll_interval_s); otherwise every
    # order_poll_interval_s. false: REST polling only.
    private_ws: bool = True
    ws_poll_interval_s: Seconds = 5.0
    # Balance drift (exchange base-asset total vs position from fills, less a baseline
    # persisted at a quiet moment): beyond this many units of the asset for this many
    # reconciles in a row (a round in which a fill landed between its trades and
    # balances reads does not count, docs/executor.md), the safety latch is set with the
    # amounts in its reason.
    balance_drift_tolerance: Decimal = Decimal("0")
    balance_drift_reconciles: Count = 3
    # ... and the drift stood at least this long (reconciles come in bursts after bus gaps)
    balance_drift_min_s: SecondsOrOff = 60.0
    # Hard caps checked by the executor itself before any order, whatever risk approved
    # (actors/executor/caps.py). 0 = off (benchmarks only). allowed_symbols empty: the
    # configured marketdata.symbols.
    max_order_notional: Decimal = Decimal("10000")
    max_open_orders_per_symbol: CountOrOff = 20
    max_orders_per_minute: CountOrOff = 120
    allowed_symbols: list[Symbol] = []

    def __post_init__(self) -> None:
        check_decimals(self, {
            "dry_run_fee_bps": bps(),
            "balance_drift_tolerance": (NON_NEGATIVE,),
            "max_order_notional": (NON_NEGATIVE,),  # 0 = off (benchmarks only)
        })


class ReconcilerConfig(_Section):
    interval_s: Seconds = 15.0
    failure_threshold: Count = 3
    request_timeout_s: Seconds = 10.0  # per attempt of a ReconcileQuery to the executor
    incident_min_interval_s: SecondsOrOff = 1.0  # incident-triggered rounds at most this often


class DashboardConfig(_Section):
    # Loopback by default: the dashboard has no TLS, so its token would cross a network
    # in clear. Any other address needs allow_remote = true (put a TLS proxy in front).
    host: str = "127.0.0.1"
    port: Port = 18_090
    allow_remote: bool = False
    token_file: str = "dashboard.token"  # under data_dir; created 0600 at first start
    audit_file: str = "dashboard-audit.jsonl"  # under data_dir; every operator command
    equity_file: str = "dashboard-equity.csv"  # under data_dir; the trading day's PnL curve
    status_interval_s: Seconds = 1.0  # supervisor status poll while a browser is connected
    idle_status_interval_s: Seconds = 5.0  # ... and while none is (metrics stay fresh)
    history_points: Count = 3600  # per chart series (mid prices, equity)
    history_rows: Count = 500  # rows kept per table (orders, fills, decisions)


class RecorderConfig(_Section):
    path: str = "recordings"
    # Trading needs a recording: while the recorder is down or NOT RECORDING, status is
    # not TRADING, and giving up on it sets the kill switch. false: trade without one.
    required: bool = True
    segment_max_bytes: Bytes = 64 * 1024 * 1024
    segment_max_s: Seconds = 3600.0
    flush_interval_ms: Millis = 200
    # Closed segments (rotation, stop, and any left by a crash) are zstd-compressed.
    compress: bool = True
    compress_level: ZstdLevel = 3  # 1..22; 3 is zstd's default (see docs/recordings.md)
    # Retention: oldest closed segments first, never the open one; 0 disables a rule.
    retain_days: Annotated[float, msgspec.Meta(ge=0, le=36_500)] = 30.0
    retain_bytes: int | str = "20G"  # bytes, or a size such as "500M", "20G"
    # Status warns when the recordings' filesystem has less free space than this.
    disk_warn_bytes: int | str = "2G"
    housekeeping_interval_s: Seconds = 60.0  # compression sweep, retention, usage figures
    retry_s: Seconds = 2.0  # after a write error (disk full, I/O error), try again this often

    def retain_bytes_value(self) -> int:
        return parse_size(self.retain_bytes)

    def disk_warn_bytes_value(self) -> int:
        return parse_size(self.disk_warn_bytes)


def _default_settings(name: str) -> ActorSettings:
    return ActorSettings(enabled=actor_spec(name).enabled_by_default)


class WebhookConfig(_Section):
    url: str
    # "json": the event as one JSON object; "telegram": a Bot API sendMessage body
    # ({"chat_id", "text"}) for https://api.telegram.org/bot<TOKEN>/sendMessage.
    format: Literal["json", "telegram"] = "json"
    chat_id: str = ""
    timeout_s: Seconds = 5.0


class AlertsConfig(_Section):
    # The alerts actor runs only when at least one webhook is configured.
    webhooks: list[WebhookConfig] = msgspec.field(default_factory=list)
    on_fill: bool = False  # also an event for every fill
    max_attempts: Count = 8  # per event and webhook, then it is dropped (counted)
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0  # >= backoff_initial_s
    queue_max: Count = 1000  # per webhook; beyond it the oldest event is dropped (counted)
    # A level condition (drift, daily loss) re-alerts at most this often.
    repeat_s: SecondsOrOff = 300.0
    # The alerts actor's own probe of the exchange (public server time); 0 = off.
    exchange_probe_s: SecondsOrOff = 10.0
    exchange_probe_failures: Count = 3  # failed probes in a row = unreachable


def _default_actors() -> dict[str, ActorSettings]:
    return {name: _default_settings(name) for name in ACTOR_NAMES}


class Config(_Section):
    mode: Mode = "paper"
    runtime_dir: str = "run"
    log_dir: str = "logs"
    data_dir: str = "data"
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    gates: GatesConfig = msgspec.field(default_factory=GatesConfig)
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    simulator: SimulatorConfig = msgspec.field(default_factory=SimulatorConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    actors: dict[str, ActorSettings] = msgspec.field(default_factory=_default_actors)
    marketdata: MarketDataConfig = msgspec.field(default_factory=MarketDataConfig)
    strategy: StrategyConfig = msgspec.field(default_factory=StrategyConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    backtest: BacktestConfig = msgspec.field(default_factory=BacktestConfig)
    executor: ExecutorConfig = msgspec.field(default_factory=ExecutorConfig)
    reconciler: ReconcilerConfig = msgspec.field(default_factory=ReconcilerConfig)
    recorder: RecorderConfig = msgspec.field(default_factory=RecorderConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    dashboard: DashboardConfig = msgspec.field(default_factory=DashboardConfig)
    replay: ReplayConfig = msgspec.field(default_factory=ReplayConfig)

    # Set by load_config, not read from the file.
    base_dir: str = ""
    source_path: str = ""

    # --- derived values ------------------------------------------------------------
    def path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else Path(self.base_dir) / q

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def runtime_path(self) -> Path:
        return self.path(self.runtime_dir)

    @property
    def log_path(self) -> Path:
        return self.path(self.log_dir)

    def private_dirs(self) -> dict[str, Path]:
        """Every directory btcbot writes, by the config field that names it (owner-only:
        shared/files.py)."""
        dirs = {"runtime_dir": self.runtime_path, "log_dir": self.log_path,
                "data_dir": self.data_path, "recorder.path": self.path(self.recorder.path),
                "executor.db_path": self.path(self.executor.db_path).parent,
                "simulator.state_file": self.path(self.simulator.state_file).parent}
        seen: set[Path] = set()
        return {k: v for k, v in dirs.items() if not (v in seen or seen.add(v))}

    def shared_dirs(self) -> set[Path]:
        """Directories btcbot writes into but does not own the rest of: the config file's
        own directory and its ancestors (``db_path = "btcbot.db"`` puts the DB beside
        the config). Their modes are checked, their other contents left alone."""
        here = Path(self.source_path).parent if self.source_path else Path(self.base_dir)
        return {here, *here.parents}

    def ipc(self, name: str) -> str:
        return f"ipc://{self.runtime_path / name}"

    @property
    def bus_pub_endpoint(self) -> str:
        return self.bus.pub_endpoint or self.ipc("bus.in")

    @property
    def bus_sub_endpoint(self) -> str:
        return self.bus.sub_endpoint or self.ipc("bus.out")

    def command_endpoint(self, actor: str) -> str:
        return self.bus.command_endpoints.get(actor) or self.ipc(f"cmd.{actor}")

    def identity(self, name: str) -> str:
        """``name``'s bus identity on this host (its key's name, bus/auth.py)."""
        return f"{name}@{self.bus.host_id}" if self.bus.host_id else name

    @property
    def supervisor_endpoint(self) -> str:
        return self.ipc("supervisor")

    @property
    def exchange_kind(self) -> str:
        return {"paper": "simulator", "live": "btcturk", "dry-run": "none"}[self.mode]

    @property
    def rest_url(self) -> str:
        if self.exchange.rest_url:
            return self.exchange.rest_url
        if self.mode == "live":
            return "https://api.btcturk.com"
        return f"http://{self.simulator.host}:{self.simulator.port}"

    @property
    def ws_url(self) -> str:
        if self.exchange.ws_url:
            return self.exchange.ws_url
        if self.mode == "live":
            return "wss://ws-feed-pro.btcturk.com"
        return f"ws://{self.simulator.host}:{self.simulator.port}/ws"

    def credentials(self) -> tuple[str, str]:
        """(api_key, api_secret) for the authenticated client of this mode."""
        if self.mode == "paper":  # never live keys against the simulator
            return self.simulator.api_key, self.simulator.api_secret
        return self.exchange.api_key, self.exchange.api_secret

    @property
    def runs_simulator(self) -> bool:
        """Paper mode trades against the embedded simulator; dry-run uses it as its
        public market-data source unless an exchange URL is configured."""
        return self.mode == "paper" or (self.mode == "dry-run" and not self.exchange.rest_url)

    def actor_settings(self, name: str) -> ActorSettings:
        return self.actors.get(name) or ActorSettings(enabled=False)

    def actor_nice(self, name: str) -> int:
        nice = self.actor_settings(name).nice
        return actor_spec(name).nice if nice is None else nice

    def enabled_actors(self) -> list[str]:
        """Children to run in this mode, in start order (dependencies first)."""
        return start_order(n for n in ACTOR_NAMES
                           if self.actor_enabled(n) and actor_spec(n).runs_in(self))

    def actor_enabled(self, name: str) -> bool:
        enabled = self.actor_settings(name).enabled
        return actor_spec(name).enabled_by_default if enabled is None else enabled

    def live_arming_problems(self) -> list[str]:
        """Why live trading is not armed (empty when it is)."""
        problems = []
        if not self.gates.live_trading:
            problems.append("gates.live_trading is not true")
        if self.gates.live_trading_ack != LIVE_ACK:
            problems.append(f"gates.live_trading_ack is not exactly {LIVE_ACK!r}")
        if not self.exchange.api_key or not self.exchange.api_secret:
            problems.append("exchange credentials missing (BTCTURK_API_KEY / BTCTURK_API_SECRET)")
        return problems


_ENV_BOOL = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return _ENV_BOOL[raw.strip().lower()]
    except KeyError:
        raise ConfigError(f"environment {name}={raw!r} is not a boolean") from None


def _apply_env(cfg: Config) -> None:
    """Secrets and gates only."""
    if key := os.environ.get("BTCTURK_API_KEY"):
        cfg.exchange.api_key = key
    if secret := os.environ.get("BTCTURK_API_SECRET"):
        cfg.exchange.api_secret = secret
    for env, attr in (("BTCBOT_KILL_SWITCH", "kill_switch"), ("BTCBOT_SAFE_MODE", "safe_mode"),
                      ("BTCBOT_LIVE_TRADING", "live_trading")):
        value = _env_bool(env)
        if value is not None:
            setattr(cfg.gates, attr, value)
    if ack := os.environ.get("BTCBOT_LIVE_TRADING_ACK"):
        cfg.gates.live_trading_ack = ack


def _read_secret_file(cfg: Config) -> None:
    if not cfg.exchange.api_secret_file or cfg.exchange.api_secret:
        return
    path = cfg.path(cfg.exchange.api_secret_file)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"exchange.api_secret_file: cannot read {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"exchange.api_secret_file: {path} must be mode 0600 (is {mode & 0o777:o})"
        )
    cfg.exchange.api_secret = path.read_text().strip()


def _validate(cfg: Config) -> None:
    """What msgspec cannot say while decoding: names, endpoints, and the rules that
    relate two fields. Ranges of single numbers are the types' (config_ranges.py)."""
    for name in cfg.actors:
        if name not in ACTOR_NAMES:
            raise ConfigError(f"actors.{name}: unknown actor (known: {', '.join(ACTOR_NAMES)})")
    for name in ACTOR_NAMES:  # a section lists only what it changes
        settings = cfg.actors.setdefault(name, _default_settings(name))
        if settings.enabled is None:
            settings.enabled = actor_spec(name).enabled_by_default
    endpoints = [("bus.pub_endpoint", cfg.bus.pub_endpoint),
                 ("bus.sub_endpoint", cfg.bus.sub_endpoint),
                 *((f"bus.command_endpoints.{n}", e)
                   for n, e in cfg.bus.command_endpoints.items())]
    for field, endpoint in endpoints:
        # tcp is safe to offer because every socket is CURVE-authenticated (bus/auth.py).
        if endpoint and not endpoint.startswith(("ipc://", "tcp://")):
            raise ConfigError(f"{field}: {endpoint!r} is neither ipc:// nor tcp://")
    for name in cfg.bus.command_endpoints:
        if name not in ACTOR_NAMES:
            raise ConfigError(f"bus.command_endpoints.{name}: unknown actor")
    if cfg.bus.host_id and not set(cfg.bus.host_id) <= set("abcdefghijklmnopqrstuvwxyz0123456789-"):
        raise ConfigError(f"bus.host_id: {cfg.bus.host_id!r} is not [a-z0-9-]")
    d = cfg.dashboard
    if d.host not in ("127.0.0.1", "localhost", "::1") and not d.allow_remote:
        raise ConfigError(f"dashboard.host: {d.host!r} is not loopback; the dashboard has no "
                          f"TLS, so binding it elsewhere needs dashboard.allow_remote = true")
    if not cfg.marketdata.symbols:
        raise ConfigError("marketdata.symbols: at least one symbol is required")
    if cfg.replay.verify and cfg.mode != "dry-run":
        raise ConfigError(f"replay.verify: only for replay --verify's isolated dry-run "
                          f"pipeline (mode is {cfg.mode})")
    for field, names in (("marketdata.symbols", cfg.marketdata.symbols),
                         ("executor.allowed_symbols", cfg.executor.allowed_symbols)):
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ConfigError(f"{field}: listed more than once: {', '.join(dupes)}")
    for i, hook in enumerate(cfg.alerts.webhooks):
        if not hook.url.startswith(("http://", "https://")):
            raise ConfigError(f"alerts.webhooks[{i}].url: must be an http:// or https:// URL")
        if hook.format == "telegram" and not hook.chat_id:
            raise ConfigError(f"alerts.webhooks[{i}].chat_id: required for format telegram")
    for field in ("retain_bytes", "disk_warn_bytes"):
        try:
            parse_size(getattr(cfg.recorder, field))
        except ValueError as exc:
            raise ConfigError(f"recorder.{field}: {exc}") from None
    _validate_rotation(cfg.logging.rotation)
    _validate_exchange_urls(cfg)
    for field, problem in (
            ("simulator.balances", balances_problem(cfg.simulator.balances)),
            ("backtest.balances", balances_problem(cfg.backtest.balances)),
            ("simulator.fee_schedule", cfg.simulator.fee_schedule
             and fee_schedule_problem(cfg.simulator.fee_schedule))):
        if problem:
            raise ConfigError(f"{field}: {problem}")
    try:
        zone(cfg.risk.day_boundary_tz)
    except BadTimeZone as exc:
        raise ConfigError(f"risk.day_boundary_tz: {exc}") from None
    for rule in cross_field_rules(cfg):
        if not rule.holds:
            raise ConfigError(rule.message())
    _validate_hop_bounds(cfg.supervisor)


def _validate_hop_bounds(sup: SupervisorConfig) -> None:
    """The per-hop table: its keys are hop names, its values bounds like the default's."""
    for hop, value in sup.hop_p99_bounds_ms.items():
        field = f"supervisor.hop_p99_bounds_ms.{hop}"
        if hop not in BOUNDABLE:
            raise ConfigError(f"{field}: unknown hop (known: {', '.join(BOUNDABLE)})")
        if not (math.isfinite(value) and 0 < value <= 3_600_000):
            raise ConfigError(f"{field}: must be > 0 and <= 3600000 ms (got {value})")


_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _validate_exchange_urls(cfg: Config) -> None:
    """Schemes, and TLS for live: signed requests (the key, a signature, the account's
    orders) never cross a network in clear. Loopback is allowed plain (a simulator
    standing in for BTCTurk in tests)."""
    for field, url, schemes in (("exchange.rest_url", cfg.exchange.rest_url, ("http", "https")),
                                ("exchange.ws_url", cfg.exchange.ws_url, ("ws", "wss"))):
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{field}: {url!r} is not a {' or '.join(schemes)} URL")
        if (cfg.mode == "live" and parts.scheme in ("http", "ws")
                and parts.hostname not in _LOOPBACK):
            raise ConfigError(f"{field}: live mode needs {schemes[1]}:// for {url!r} "
                              f"(signed requests would cross the network in clear)")


def _validate_rotation(rotation: str) -> None:
    """loguru parses ``logging.rotation`` only when a process opens its log: a bad value
    would crash every actor at start. Parsed here with loguru's own parser."""
    from loguru._file_sink import FileSink  # the parser shared/logging.py's sink uses

    try:
        FileSink._make_rotation_function(rotation)
    except (ValueError, TypeError):
        raise ConfigError(f"logging.rotation: {rotation!r} is not a size (\"20 MB\"), a "
                          f"duration (\"1 day\") or a time of day (\"00:00\")") from None


class _Rule(msgspec.Struct, frozen=True):
    """``field`` OP ``other`` (a field or a plain bound), with why in a few words."""

    field: str
    value: Any
    op: str
    other: str
    other_value: Any
    why: str
    applies: bool = True

    @property
    def holds(self) -> bool:
        if not self.applies:
            return True
        a, b = self.value, self.other_value
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "!=": a != b}[self.op]

    def message(self) -> str:
        return (f"{self.field}: must be {self.op} {self.other} ({self.other_value}) "
                f"(got {self.value}): {self.why}")


def cross_field_rules(cfg: Config) -> list[_Rule]:
    """Rules between two fields, in one table (each documented by its ``why``)."""
    sup, md, risk, ex, al = cfg.supervisor, cfg.marketdata, cfg.risk, cfg.executor, cfg.alerts
    rules = [
        _Rule("supervisor.backoff_max_s", sup.backoff_max_s, ">=", "supervisor.backoff_initial_s",
              sup.backoff_initial_s, "the backoff grows from initial to max"),
        _Rule("executor.probe_backoff_max_s", ex.probe_backoff_max_s, ">=",
              "executor.probe_backoff_initial_s", ex.probe_backoff_initial_s,
              "the backoff grows from initial to max"),
        _Rule("alerts.backoff_max_s", al.backoff_max_s, ">=", "alerts.backoff_initial_s",
              al.backoff_initial_s, "the backoff grows from initial to max"),
        _Rule("marketdata.rest_poll_interval_s", md.rest_poll_interval_s, "<",
              "marketdata.max_data_age_s", md.max_data_age_s,
              "a polled book would be stale before the next poll"),
        _Rule("risk.min_order_notional_try", risk.min_order_notional_try, "<=",
              "risk.max_notional_per_order_try", risk.max_notional_per_order_try,
              "no order could satisfy both", applies=risk.max_notional_per_order_try > 0),
        _Rule("risk.min_order_notional_try", risk.min_order_notional_try, "<=",
              "risk.max_position_try_per_symbol", risk.max_position_try_per_symbol,
              "no order could satisfy both"),
    ]
    for name, settings in cfg.actors.items():
        rules.append(_Rule(f"actors.{name}.heartbeat_timeout_s", settings.heartbeat_timeout_s,
                           ">", "supervisor.heartbeat_interval_s", sup.heartbeat_interval_s,
                           "a child would be judged late between two heartbeats"))
    if cfg.runs_simulator and cfg.actor_enabled("dashboard"):
        rules.append(_Rule("dashboard.port", cfg.dashboard.port, "!=", "simulator.port",
                           cfg.simulator.port, "both listen on it"))
    return rules


def load_config(path: str | os.PathLike[str], *, mode: str | None = None) -> Config:
    """Load, validate and apply environment overrides. Raises ConfigError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    split_strategy_table(doc)
    try:
        cfg = msgspec.convert(doc, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{_describe(exc, doc)} (in {p})") from None
    if cfg.base_dir or cfg.source_path:
        raise ConfigError("base_dir/source_path: not settable in the file")
    cfg.base_dir = str(p.resolve().parent)
    cfg.source_path = str(p.resolve())
    if mode is not None:
        if mode not in ("dry-run", "paper", "live"):
            raise ConfigError(f"mode: {mode!r} is not one of dry-run, paper, live")
        cfg.mode = mode  # type: ignore[assignment]
    _apply_env(cfg)
    _read_secret_file(cfg)
    _validate(cfg)
    return cfg


def _describe(exc: msgspec.ValidationError, doc: dict[str, object]) -> str:
    """msgspec says '... - at `$.risk.cooldown_s`'; lead with the dotted field name and
    say the allowed range (config_ranges.explain)."""
    text = str(exc)
    actors = doc.get("actors")
    if "$.actors[...]" in text and isinstance(actors, dict):
        for name, spec in actors.items():  # name the actor msgspec calls "[...]"
            try:
                msgspec.convert(spec, type=ActorSettings)
            except msgspec.ValidationError as inner:
                text = str(inner).replace("`$", f"`$.actors.{name}")
                break
    if " - at `$." in text:
        message, _, where = text.rpartition(" - at `$.")
        return explain(message, where.rstrip("`"), doc, Config)
    if "unknown field" in text:
        return f"(top level): {text}"
    return text


def redact(value: str) -> str:
    """For logs: never print a secret, only that it is set."""
    return "<set>" if value else "<empty>"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (e.g. an element of alerts.webhooks)
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """Write a config document (scalars, lists, nested tables) as TOML, for the
    isolated configs replay and tests generate; msgspec's TOML encoder needs an extra
    package we do not otherwise depend on. TOML has no null: a None is left out, which
    is what it means in our config (unset, the default; every optional key defaults to
    None)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items()
             if v is not None and not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}{_toml_key(k)}"
            lines.append(f"\n[{name}]")
            lines.append(to_toml(v, name + ".").rstrip("\n"))
    return "\n".join(x for x in lines if x) + "\n"


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)
