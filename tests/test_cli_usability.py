"""The CLI as a person uses it (issue 18, section 6): ``--config`` before or after the
command and from ``BTCBOT_CONFIG``, ``--version``, click's shell completion, ``logs``
interleaving every log by time (the simulator's too) coloured only on a terminal,
``logs strategy -f`` showing decisions, and ``status`` fitting 80 columns."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from actors.supervisor.cli import cli, hoist_config
from actors.supervisor.status import WIDTH, render_text
from shared.actorspec import ACTOR_NAMES
from tests.helpers import REPO, SUPERVISOR, kill_all

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# --- --config anywhere, BTCBOT_CONFIG, --version ---------------------------------------


def test_hoist_config_moves_every_config_option_to_the_front() -> None:
    assert hoist_config(["status", "--config", "a.toml"]) == ["--config", "a.toml", "status"]
    assert hoist_config(["logs", "risk", "--config=b.toml", "-f"]) == [
        "--config=b.toml", "logs", "risk", "-f"]
    assert hoist_config(["--config", "a", "status"]) == ["--config", "a", "status"]
    assert hoist_config(["status", "--", "--config", "x"]) == ["status", "--", "--config", "x"]
    assert hoist_config(["status", "--config"]) == ["status", "--config"]  # click says why


@given(st.lists(st.sampled_from(["status", "logs", "-f", "--json", "risk", "--config",
                                 "--config=x", "p.toml", "--"]), max_size=12))
def test_hoisting_keeps_every_argument_and_leaves_no_config_behind(args: list[str]) -> None:
    out = hoist_config(args)
    assert sorted(out) == sorted(args)  # nothing lost, nothing added
    assert hoist_config(out) == out  # once in front, it stays
    head = out[:out.index("--")] if "--" in out else out
    i = 0
    while i < len(head) and head[i].startswith("--config"):  # the hoisted options...
        i += 2 if head[i] == "--config" else 1
    rest = head[i:]
    # ...and after them no --config but a dangling last one (click reports it)
    assert all(not a.startswith("--config") for a in rest[:-1]), out
    if rest and rest[-1].startswith("--config"):
        assert rest[-1] == "--config"


def _bad_config(tmp: Path, name: str, field: str) -> Path:
    """A config whose error names ``field``: which file a command read is then visible."""
    path = tmp / name
    section, key = field.split(".")
    path.write_text(f"[{section}]\n{key} = -7\n")
    return path


def test_config_before_or_after_the_command_and_from_the_environment(tmp_path: Path) -> None:
    a = _bad_config(tmp_path, "a.toml", "risk.cooldown_s")
    b = _bad_config(tmp_path, "b.toml", "bus.hwm")
    runner = CliRunner()
    for args, env, read in (
        (["--config", str(a), "status"], {}, "risk.cooldown_s"),
        (["status", "--config", str(a)], {}, "risk.cooldown_s"),
        (["status", "--json", f"--config={a}"], {}, "risk.cooldown_s"),
        (["logs", "risk", "--config", str(b), "-n", "3"], {}, "bus.hwm"),
        (["status"], {"BTCBOT_CONFIG": str(b)}, "bus.hwm"),
        (["status", "--config", str(a)], {"BTCBOT_CONFIG": str(b)}, "risk.cooldown_s"),
    ):
        r = runner.invoke(cli, args, env=env)
        assert r.exit_code == 2, (args, r.output)
        assert f"config error: {read}: must be" in r.stderr, (args, r.stderr)


def test_version_names_btcbot_and_its_libraries() -> None:
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0
    assert re.fullmatch(r"btcbot-supervisor \S+ \(python 3\.\d+\.\d+, pyzmq \S+, libzmq \S+, "
                        r"msgspec \S+, sqlite \S+\)\n", r.output), r.output


def test_shell_completion_is_clicks_own(tmp_path: Path) -> None:
    env = {**os.environ, "_BTCBOT_SUPERVISOR_COMPLETE": "bash_source"}
    r = subprocess.run([*SUPERVISOR], env=env, capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0 and "_btcbot_supervisor_completion()" in r.stdout, r.stdout

    def complete(*words: str) -> list[str]:
        env = {**os.environ, "_BTCBOT_SUPERVISOR_COMPLETE": "bash_complete",
               "COMP_WORDS": " ".join(["btcbot-supervisor", *words]),
               "COMP_CWORD": str(len(words))}
        out = subprocess.run([*SUPERVISOR], env=env, capture_output=True, text=True,
                             cwd=REPO, timeout=60).stdout
        return [line.split(",", 1)[1] for line in out.splitlines()]

    assert {"logs", "latch"} <= set(complete("l"))
    assert complete("restart", "ex") == ["executor", "exchange-sim"] or \
        sorted(complete("restart", "ex")) == ["exchange-sim", "executor"]
    assert complete("logs", "su") == ["supervisor"]


# --- logs ------------------------------------------------------------------------------

def _log_config(tmp: Path) -> Path:
    path = tmp / "c.toml"
    path.write_text(f'log_dir = "{tmp}/logs"\nruntime_dir = "{tmp}/run"\n'
                    f'data_dir = "{tmp}/data"\n')
    (tmp / "logs").mkdir(mode=0o700)
    return path


def _line(t: str, actor: str, text: str) -> str:
    return f"2026-12-03 07:{t} | INFO     | {actor} | {text}\n"


def test_logs_all_interleaves_every_log_by_time_the_simulator_included(tmp_path: Path) -> None:
    cfg = _log_config(tmp_path)
    empty = CliRunner().invoke(cli, ["--config", str(cfg), "logs", "--all"])
    assert empty.exit_code == 2 and "no logs in" in empty.stderr
    logs = tmp_path / "logs"
    (logs / "risk.log").write_text(_line("00:01.000", "risk", "r1") + _line("00:04.000", "risk",
                                                                            "r2"))
    (logs / "strategy.log").write_text(_line("00:02.000", "strategy", "s1")
                                       + "Traceback (most recent call last):\n"
                                       + _line("00:05.000", "strategy", "s2"))
    (logs / "supervisor.log").write_text(_line("00:00.500", "supervisor", "sup"))
    (logs / "exchange-sim.out").write_text("exchange-sim listening on http://127.0.0.1:1\n")
    (logs / "risk.2026-12-02_00-00-00_000000.log").write_text(_line("00:03.000", "x", "old"))
    r = CliRunner().invoke(cli, ["--config", str(cfg), "logs", "--all", "-n", "20"])
    assert r.exit_code == 0, r.output
    got = [(line.split("|")[0].strip(), line.rsplit("|", 1)[1].strip() if "|" in line[14:]
            else line) for line in r.output.splitlines()]
    names = [n for n, _ in got]
    assert names == ["exchange-sim", "supervisor", "risk", "strategy", "strategy", "risk",
                     "strategy"], r.output
    assert "Traceback" in r.output.splitlines()[4]  # unstamped: with the line before it
    assert "old" not in r.output  # a rotated file is not an actor
    assert not ANSI.search(r.output)  # not a terminal: plain
    coloured = CliRunner().invoke(cli, ["--config", str(cfg), "logs", "--all"], color=True)
    assert ANSI.search(coloured.output)
    colours = {line.split("|")[0] for line in coloured.output.splitlines()}
    assert len(colours) == 4  # one colour per actor
    last = CliRunner().invoke(cli, ["--config", str(cfg), "logs", "--all", "-n", "2"])
    assert [line.split("|")[0].strip() for line in last.output.splitlines()] == [
        "risk", "strategy"]
    sim = CliRunner().invoke(cli, ["--config", str(cfg), "logs", "exchange-sim"])
    assert sim.output == "exchange-sim listening on http://127.0.0.1:1\n"
    bad = CliRunner().invoke(cli, ["--config", str(cfg), "logs", "nosuch"])
    assert bad.exit_code == 2 and "known: supervisor, bus" in bad.stderr


def test_interleave_puts_a_line_without_a_time_where_it_belongs() -> None:
    from actors.supervisor.logtail import interleave, line_time

    t9 = line_time(_line("00:09.000", "risk", "x"))
    assert t9 is not None
    last: dict[str, float] = {}
    first = interleave({"exchange-sim": ["listening"],
                        "risk": [_line("00:01.000", "risk", "a").rstrip()]}, last)
    assert [n for n, _ in first] == ["exchange-sim", "risk"]  # no time yet: first
    later = interleave({"exchange-sim": ["POST /api 200"],
                        "risk": [_line("00:09.000", "risk", "b").rstrip(), "  traceback"]},
                       last, arrived=t9 + 1)
    assert [n for n, _ in later] == ["risk", "risk", "exchange-sim"]  # read after 00:09
    assert last["risk"] == t9


def test_logs_all_follow_shows_new_lines_of_every_log_plain_when_piped(tmp_path: Path) -> None:
    cfg = _log_config(tmp_path)
    logs = tmp_path / "logs"
    (logs / "risk.log").write_text(_line("00:01.000", "risk", "before"))
    proc = subprocess.Popen([*SUPERVISOR, "--config", str(cfg), "logs", "--all", "-f", "-n",
                             "0"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # it opens the files at their end (or when they appear)
        with open(logs / "risk.log", "a") as fh:
            fh.write(_line("00:09.000", "risk", "after"))
        (logs / "exchange-sim.out").write_text("sim: POST /api/v1/order 200\n")
        seen: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.append(proc.stdout.readline().rstrip("\n"))
    finally:
        proc.terminate()
        proc.wait(10)
    assert sorted(line.split("|")[0].strip() for line in seen) == ["exchange-sim", "risk"]
    assert any(line.endswith("after") for line in seen) and "before" not in "".join(seen)
    assert not ANSI.search("".join(seen))


# --- status in 80 columns --------------------------------------------------------------

SYMBOLS = ["BTCTRY", "ETHTRY", "SOLTRY", "AVAXTRY", "USDTTRY", "XRPTRY", "DOGETRY"]


def realistic_status() -> dict[str, Any]:
    actors = [{"name": n, "pid": 4_194_000 + i, "state": s, "ready": True, "restarts": 12,
               "uptime_s": 9_876_543.0, "heartbeat_age_s": 12.3, "cpu_percent": 100.0,
               "rss_bytes": 1_234_500_000, "gave_up": False}
              for i, (n, s) in enumerate(zip(ACTOR_NAMES, ["READY", "DEGRADED_RECOVERY",
                                                           "PAUSED_SAFETY", "EXECUTING"] * 3,
                                             strict=False))]
    reason = ("reconcile failed 3 times for ETHTRY: exchange answered 503 Service "
              "Unavailable while listing open orders; latch set at 2026-12-03T07:00:00Z")
    return {
        "mode": "live", "exchange": {"kind": "btcturk", "url": "https://api.btcturk.com"},
        "trading": {"state": "HALTED", "reasons": [
            "safety latch set: " + reason, "market data stale: " + ", ".join(SYMBOLS),
            "recorder NOT RECORDING: disk full on /var/lib/btcbot/recordings"]},
        "actors": actors,
        "gates": {"kill_switch": True, "safe_mode": False, "live_armed": True,
                  "stale_symbols": SYMBOLS},
        "latch": {"kill_switch": True, "safety_latch": True, "paused": False,
                  "reason": reason},
        "idempotency": {"pending": 1234, "unknown": 56, "failed": 7890},
        "recordings": {"recording": False, "reason": "No space left on device (ENOSPC)",
                       "bytes": 19_999_000_000, "segments": 12345,
                       "oldest_record": "2026-11-03T07:00:00.123456Z",
                       "free_bytes": 100_000_000,
                       "warning": "less than 2.0G free on the recordings' filesystem"},
        "log_sinks_failing": {"marketdata": "ENOSPC (No space left on device)"},
        "alerts": {"sent": 123456, "failed_attempts": 789, "dropped": 12, "pending": 1000,
                   "last_error": "POST https://hooks.example.com/very/long/path/" + "x" * 80},
        "open_orders": [{"symbol": s, "side": "sell", "quantity": "123.45678901",
                         "price": "1234567.89", "filled_quantity": "100.12345678",
                         "state": "PARTIALLY_FILLED",
                         "client_order_id": f"bb-{s}-sell-0123456789abcdef0123456789abcdef"}
                        for s in SYMBOLS],
        "pnl": [{"symbol": s, "position": "123.45678901", "avg_cost": "1234567.89",
                 "mark": "1234999.99", "realized": "-123456.78", "unrealized": "98765.43",
                 "fees": "1234.56", "net": "-25925.91"} for s in SYMBOLS],
        "pnl_total": {"realized": "-864197.46", "unrealized": "691358.01",
                      "fees": "8641.92", "net": "-181481.37"},
    }


def test_status_fits_an_80_column_terminal_and_loses_nothing() -> None:
    doc = realistic_status()
    doc["pnl"][0]["avg_cost"] = "3599568.576211390308877528980"  # fills divide: 28 digits
    text = render_text(doc)
    assert "avg 3599568.576 mark" in text  # 10 significant digits on screen
    assert WIDTH == 80
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, "\n".join(too_wide)
    flat = " ".join(text.split())
    for s in SYMBOLS:
        assert f"bb-{s}-sell-0123456789abcdef0123456789abcdef" in flat.replace("- ", "-")
    assert "latch set at 2026-12-03T07:00:00Z" in flat  # wrapped, not cut
    for a in doc["actors"]:
        assert a["name"] in text and a["state"] in text


# --- a real pipeline: decisions in `logs strategy -f`, status in 80 columns -------------

def test_logs_strategy_follow_shows_each_decision_as_it_happens(make_pipeline: Any) -> None:
    p = make_pipeline({"marketdata": {"symbols": ["BTCTRY", "ETHTRY"]},
                       "strategy": {"trade_every_tick": True, "reject_backoff_s": 0.5},
                       "risk": {"cooldown_s": 0.5}})
    p.start()
    follow = subprocess.Popen([*SUPERVISOR, "--config", str(p.config), "logs", "strategy",
                               "-f", "-n", "0"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        decisions: list[str] = []
        deadline = time.monotonic() + 60
        while len(decisions) < 2 and time.monotonic() < deadline:
            line = follow.stdout.readline()
            if " because " in line and " -> " in line:
                decisions.append(line)
        assert len(decisions) == 2, decisions
        m = re.search(r"strategy: (BTCTRY|ETHTRY) (buy|sell) (limit|market) \S+@\S+ because "
                      r"(\S+) -> (approved|resized|rejected)", decisions[0])
        assert m, decisions[0]
        r = p.cli("status")
        assert r.returncode == 0, r.stderr
        assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    finally:
        follow.terminate()
        follow.wait(10)
        p.stop()
        kill_all(p.config)


def test_python_m_and_the_script_are_the_same_program() -> None:
    r = subprocess.run([sys.executable, "-m", "actors.supervisor", "--version"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("btcbot-supervisor ")
