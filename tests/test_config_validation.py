"""Config validation (issue 16): every number has an allowed range, checked while
supervisor.toml is decoded; a bad value exits 2 from every command with the field, the
range and the value given; rules between two fields name both."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.supervisor.cli import cli
from shared.config import Config, ConfigError, load_config
from tests.helpers import REPO, SUPERVISOR

BAD = [
    # (toml, the message's expected text)
    ("[risk]\nmax_daily_loss_try = -1", "risk.max_daily_loss_try: must be > 0 (got -1)"),
    ("[risk]\nmax_daily_loss_try = 0", "risk.max_daily_loss_try: must be > 0 (got 0)"),
    ("[risk]\nmax_daily_loss_try = 'NaN'", "risk.max_daily_loss_try: must be a finite number"),
    ("[risk]\nmax_position_try_per_symbol = '-5'", "risk.max_position_try_per_symbol: must be > 0"),
    ("[risk]\ntry_cash_reserve = -1", "risk.try_cash_reserve: must be >= 0 (got -1)"),
    ("[risk]\nmin_order_notional_try = 'Infinity'",
     "risk.min_order_notional_try: must be a finite"),
    ("[risk]\nmax_open_orders_per_symbol = 0",
     "risk.max_open_orders_per_symbol: must be >= 1 (got 0)"),
    ("[risk]\nmax_orders_per_minute = -3", "risk.max_orders_per_minute: must be >= 1 (got -3)"),
    ("[risk]\ncooldown_s = -1.0", "risk.cooldown_s: must be 0..31622400 (got -1.0)"),
    ("[risk]\nday_boundary_hour = 24", "risk.day_boundary_hour: must be 0..23 (got 24)"),
    ("[risk]\nexecutor_timeout_s = 0", "risk.executor_timeout_s: must be > 0"),
    ("[risk]\nexecutor_retries = -1", "risk.executor_retries: must be >= 0 (got -1)"),
    ("[dashboard]\nport = 70000", "dashboard.port: must be 1..65535 (got 70000)"),
    ("[dashboard]\nport = 0", "dashboard.port: must be 1..65535 (got 0)"),
    ("[simulator]\nport = -1", "simulator.port: must be 1..65535 (got -1)"),
    ("[simulator]\nbook_interval_ms = 0", "simulator.book_interval_ms: must be 1..3600000"),
    ("[exchange]\ntimeout_s = inf", "exchange.timeout_s: must be > 0 and <= 31622400 (got inf)"),
    ("[exchange]\ntimeout_s = nan", "exchange.timeout_s: must be > 0 and <= 31622400 (got nan)"),
    ("[bus]\nhwm = 0", "bus.hwm: must be >= 1 (got 0)"),
    ("[logging]\nretention = 0", "logging.retention: must be >= 1"),
    ("[logging]\nrotation = 'banana'", "logging.rotation: 'banana' is not a size"),
    ("[actors.recorder]\nnice = -5", "actors.recorder.nice: must be 0..19 (got -5)"),
    ("[actors.risk]\nnice = 20", "actors.risk.nice: must be 0..19 (got 20)"),
    ("[actors.executor]\nstart_timeout_s = 0", "actors.executor.start_timeout_s: must be > 0"),
    ("[supervisor]\nintensity_max_restarts = 0", "supervisor.intensity_max_restarts: must be >= 1"),
    ("[supervisor]\nstop_timeout_s = -2", "supervisor.stop_timeout_s: must be > 0"),
    ("[marketdata]\ndepth = 0", "marketdata.depth: must be 1..100 (got 0)"),
    ("[marketdata]\nmax_data_age_s = 0", "marketdata.max_data_age_s: must be > 0"),
    ("[marketdata]\nsymbols = ['btc-try']",
     "marketdata.symbols[0]: must be a pair name in capitals, like BTCTRY (got 'btc-try')"),
    ("[marketdata]\nsymbols = ['BTCTRY', 'BTCTRY']", "marketdata.symbols: listed more than once"),
    ("[strategy]\nthrottle_ms = -1", "strategy.throttle_ms: must be 0..3600000 (got -1)"),
    ("[executor]\nsettle_window_s = 0", "executor.settle_window_s: must be > 0"),
    ("[executor]\nmax_send_attempts = 0", "executor.max_send_attempts: must be >= 1 (got 0)"),
    ("[executor]\nmax_order_notional = -1", "executor.max_order_notional: must be >= 0 (got -1)"),
    ("[executor]\ndry_run_fee_bps = 10001",
     "executor.dry_run_fee_bps: must be >= 0 and <= 10000 (got 10001)"),
    ("[executor]\nmax_orders_per_minute = -1", "executor.max_orders_per_minute: must be >= 0"),
    ("[executor]\nallowed_symbols = ['x']", "executor.allowed_symbols[0]: must be a pair name"),
    ("[reconciler]\nfailure_threshold = 0", "reconciler.failure_threshold: must be >= 1"),
    ("[recorder]\ncompress_level = 23", "recorder.compress_level: must be 1..22 (got 23)"),
    ("[recorder]\nsegment_max_bytes = 100", "recorder.segment_max_bytes: must be >= 4096"),
    ("[recorder]\nretain_days = -1", "recorder.retain_days: must be 0..36500 (got -1)"),
    ("[recorder]\nretain_bytes = -1", "recorder.retain_bytes: -1 is negative"),
    ("[recorder]\nflush_interval_ms = 0", "recorder.flush_interval_ms: must be 1..3600000"),
    ("[alerts]\nqueue_max = 0", "alerts.queue_max: must be >= 1 (got 0)"),
    ("[[alerts.webhooks]]\nurl = 'http://127.0.0.1:9/x'\ntimeout_s = 0",
     "alerts.webhooks[0].timeout_s: must be > 0"),
    ("[backtest]\nmaker_fee_bps = -1", "backtest.maker_fee_bps: must be >= 0 and <= 10000"),
    ("[simulator]\nbalances = 'TRY:100'", "simulator.balances: 'TRY:100' is not ASSET=AMOUNT"),
    ("[simulator]\nbalances = 'TRY=100,BTC=-1'", "simulator.balances: 'BTC=-1': the amount must"),
    ("[backtest]\nbalances = 'TRY=NaN'", "backtest.balances: 'TRY=NaN' is not ASSET=AMOUNT"),
    ("[simulator]\nfee_schedule = '0:0.001/2'", "simulator.fee_schedule: tier '0:0.001/2': fee"),
    ("[simulator]\nfee_schedule = '100:0.001/0.002'",
     "simulator.fee_schedule: the first tier must start at volume 0"),
    ("[simulator]\nfee_schedule = '0:x'", "simulator.fee_schedule: bad tier '0:x'"),
    ("[exchange]\nrest_url = 'ftp://x'", "exchange.rest_url: 'ftp://x' is not a http or https"),
    ("[exchange]\nws_url = 'https://x'", "exchange.ws_url: 'https://x' is not a ws or wss URL"),
    ("mode = 'live'\n[exchange]\nrest_url = 'http://api.btcturk.com'",
     "exchange.rest_url: live mode needs https:// for 'http://api.btcturk.com'"),
    ("mode = 'live'\n[exchange]\nws_url = 'ws://10.0.0.5/ws'",
     "exchange.ws_url: live mode needs wss://"),
    ("[dashboard]\nhistory_rows = 0", "dashboard.history_rows: must be >= 1 (got 0)"),
    # rules between two fields name both, with the other's value
    ("[supervisor]\nbackoff_initial_s = 2.0\nbackoff_max_s = 1.0",
     "supervisor.backoff_max_s: must be >= supervisor.backoff_initial_s (2.0) (got 1.0)"),
    ("[executor]\nprobe_backoff_initial_s = 5.0\nprobe_backoff_max_s = 1.0",
     "executor.probe_backoff_max_s: must be >= executor.probe_backoff_initial_s (5.0)"),
    ("[alerts]\nbackoff_initial_s = 60.0",
     "alerts.backoff_max_s: must be >= alerts.backoff_initial_s"),
    ("[marketdata]\nmax_data_age_s = 1.0\nrest_poll_interval_s = 2.0",
     "marketdata.rest_poll_interval_s: must be < marketdata.max_data_age_s (1.0) (got 2.0)"),
    ("[risk]\nmin_order_notional_try = 600\nmax_notional_per_order_try = 500",
     "risk.min_order_notional_try: must be <= risk.max_notional_per_order_try (500)"),
    ("[risk]\nmin_order_notional_try = 6000",
     "risk.min_order_notional_try: must be <= risk.max_position_try_per_symbol (5000)"),
    ("[actors.strategy]\nheartbeat_timeout_s = 0.5",
     "actors.strategy.heartbeat_timeout_s: must be > supervisor.heartbeat_interval_s (1.0)"),
    ("[simulator]\nport = 18090\n[dashboard]\nport = 18090\n[actors.dashboard]\nenabled = true",
     "dashboard.port: must be != simulator.port (18090) (got 18090)"),
]


def _write(tmp: Path, body: str) -> Path:
    path = tmp / "bad.toml"
    # everything inside tmp, so nothing a command might create lands in the repo
    path.write_text(f'runtime_dir = "{tmp}/run"\nlog_dir = "{tmp}/logs"\n'
                    f'data_dir = "{tmp}/data"\n{body}\n')
    return path


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_value_exits_2_naming_field_range_and_value(tmp_path: Path, body: str,
                                                          message: str) -> None:
    cfg = _write(tmp_path, body)
    r = CliRunner().invoke(cli, ["--config", str(cfg), "status"])
    assert r.exit_code == 2, r.output
    assert f"btcbot-supervisor: config error: {message}" in r.stderr, r.stderr


@pytest.mark.parametrize(("body", "message"), [BAD[0], BAD[12], BAD[16], BAD[-2]])
def test_start_refuses_a_bad_config_before_anything_runs(tmp_path: Path, body: str,
                                                          message: str) -> None:
    cfg = _write(tmp_path, body)
    r = subprocess.run([*SUPERVISOR, "--config", str(cfg), "start", "--detach"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2, r
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "logs").exists()


def test_the_shipped_config_and_the_defaults_are_valid(tmp_path: Path) -> None:
    load_config(REPO / "supervisor.toml")
    (tmp_path / "empty.toml").write_text("")
    load_config(tmp_path / "empty.toml")


def _numeric_fields(info: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every int/float/Decimal leaf of the config's type, by dotted path."""
    mi = msgspec.inspect
    if isinstance(info, mi.UnionType):
        real = [t for t in info.types if not isinstance(t, mi.NoneType)]
        info = real[0] if len(real) == 1 else info
    if isinstance(info, mi.StructType):
        return [x for f in info.fields
                for x in _numeric_fields(f.type, f"{path}.{f.name}".lstrip("."))]
    if isinstance(info, mi.DictType) and isinstance(info.value_type, mi.StructType):
        return _numeric_fields(info.value_type, path + ".risk")  # any actor's name
    if isinstance(info, mi.ListType) and isinstance(info.item_type, mi.StructType):
        return _numeric_fields(info.item_type, path + "[0]")
    if isinstance(info, mi.IntType | mi.FloatType | mi.DecimalType):
        return [(path, info)]
    return []


NUMERIC = _numeric_fields(msgspec.inspect.type_info(Config))
UNBOUNDED = {"simulator.seed"}  # any integer seeds the simulator's random walk


def test_every_number_in_the_config_has_a_range() -> None:
    """A new numeric field without a range fails here rather than accepting -1 or inf."""
    assert len(NUMERIC) > 80
    for path, info in NUMERIC:
        if path in UNBOUNDED or isinstance(info, msgspec.inspect.DecimalType):
            continue
        assert (info.gt, info.ge) != (None, None), f"{path} has no lower bound"
        if isinstance(info, msgspec.inspect.FloatType):
            assert (info.lt, info.le) != (None, None), f"{path} accepts inf"


def _doc_with(path: str, value: Any) -> str:
    section, _, key = path.rpartition(".")
    if "[0]" in section:  # alerts.webhooks[0].timeout_s
        table = section.replace("[0]", "")
        return f"[[{table}]]\nurl = 'http://127.0.0.1:9/x'\n{key} = {value}\n"
    return f"[{section}]\n{key} = {value}\n" if section else f"{key} = {value}\n"


@pytest.mark.parametrize("path", [p for p, i in NUMERIC
                                  if isinstance(i, msgspec.inspect.DecimalType)])
def test_every_money_field_refuses_nan_naming_it(tmp_path: Path, path: str) -> None:
    (tmp_path / "c.toml").write_text(_doc_with(path, "'NaN'"))
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: must be a finite")):
        load_config(tmp_path / "c.toml")


@pytest.mark.parametrize("path", [p for p, i in NUMERIC
                                  if p not in UNBOUNDED
                                  and not isinstance(i, msgspec.inspect.DecimalType)])
def test_every_bounded_number_refuses_minus_one_billion_naming_it(tmp_path: Path,
                                                                   path: str) -> None:
    (tmp_path / "c.toml").write_text(_doc_with(path, "-1000000000"))
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: must be ")):
        load_config(tmp_path / "c.toml")


@settings(max_examples=60, deadline=None)
@given(port=st.integers(min_value=-100_000, max_value=200_000))
def test_a_port_loads_exactly_when_it_is_1_to_65535(tmp_path_factory: Any, port: int) -> None:
    path = tmp_path_factory.mktemp("p") / "c.toml"
    path.write_text(f"[simulator]\nport = {port}\n[actors.dashboard]\nenabled = false\n")
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert not 1 <= port <= 65535
        assert str(exc).startswith(f"simulator.port: must be 1..65535 (got {port})")
    else:
        assert 1 <= port <= 65535 and cfg.simulator.port == port
