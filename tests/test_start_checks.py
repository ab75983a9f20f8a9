"""What ``start`` checks before any actor runs (issue 16): owner-only directories
(refused when others may write or own them, tightened with a warning when others may
read them; umask 0077 for the supervisor and every child) and the configured symbols
against the exchange's exchangeinfo."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from actors.supervisor.symbols import SymbolCheck, judge, unknown_symbols
from shared.files import audit_private_dirs
from tests.helpers import REPO, SUPERVISOR, base_config, kill_all, processes_using, write_config

# --- directories (unit) --------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.mark.parametrize(("mode", "who"), [(0o777, "everyone"), (0o1777, "everyone"),
                                           (0o770, "its group"), (0o720, "its group")])
def test_a_dir_others_may_write_is_refused_and_left_alone(tmp_path: Path, mode: int,
                                                          who: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    os.chmod(logs, mode)
    audit = audit_private_dirs({"log_dir": logs})
    assert len(audit.refused) == 1 and not audit.fixed
    assert audit.refused[0].startswith(f"log_dir {logs}: writable by {who}")
    assert _mode(logs) == mode  # not "fixed": its contents may already be someone else's


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory away needs root")
def test_a_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, 65534, 65534)
    audit = audit_private_dirs({"data_dir": data})
    assert audit.refused == [f"data_dir {data}: owned by uid 65534, not by this user (uid 0)"]


def test_readable_dirs_and_files_are_made_owner_only_with_a_warning(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "old").mkdir(parents=True)
    os.chmod(logs, 0o755)
    os.chmod(logs / "old", 0o755)
    (logs / "risk.log").write_text("x")
    os.chmod(logs / "risk.log", 0o644)
    (logs / "private.log").write_text("x")
    os.chmod(logs / "private.log", 0o600)
    (logs / "link").symlink_to("/etc/passwd")
    before = _mode(Path("/etc/passwd"))
    audit = audit_private_dirs({"log_dir": logs, "data_dir": tmp_path / "missing"})
    assert not audit.refused
    assert audit.fixed == [f"log_dir {logs}: was readable by others (mode 755); now 700, "
                           f"2 entries inside made owner-only"]
    assert (_mode(logs), _mode(logs / "old"), _mode(logs / "risk.log")) == (0o700, 0o700, 0o600)
    assert _mode(Path("/etc/passwd")) == before  # a symlink is never followed
    assert audit_private_dirs({"log_dir": logs}).fixed == []  # nothing left to say


def test_only_group_and_other_bits_go_and_a_shared_dir_keeps_its_contents(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    (data / "tool.sh").write_text("#!/bin/sh\n")
    os.chmod(data / "tool.sh", 0o755)
    audit_private_dirs({"data_dir": data})
    assert _mode(data / "tool.sh") == 0o700  # still executable by its owner
    here = tmp_path / "repo"
    here.mkdir()
    os.chmod(here, 0o755)
    (here / "README").write_text("x")
    os.chmod(here / "README", 0o644)
    audit = audit_private_dirs({"executor.db_path": here}, shallow={here.resolve()})
    assert audit.fixed == [f"executor.db_path {here}: was readable by others (mode 755); "
                           f"now 700, its contents left alone (shared with the config file)"]
    assert (_mode(here), _mode(here / "README")) == (0o700, 0o644)


# --- symbols (unit) ------------------------------------------------------------------


def test_unknown_symbols_compares_without_underscores_or_case() -> None:
    assert unknown_symbols(["BTCTRY", "ETHTRY", "NOPETRY"], ["BTC_TRY", "ethtry"]) == ["NOPETRY"]
    assert unknown_symbols(["BTCTRY"], ["BTCTRY"]) == []


@pytest.mark.parametrize(("mode", "verdict", "action"), [
    ("live", "ok", "start"), ("paper", "ok", "start"), ("dry-run", "ok", "start"),
    ("live", "unknown", "refuse_usage"), ("paper", "unknown", "refuse_usage"),
    ("dry-run", "unknown", "refuse_usage"),
    ("live", "unreachable", "refuse"), ("paper", "unreachable", "refuse"),
    ("dry-run", "unreachable", "warn"),
])
def test_judge(mode: str, verdict: Any, action: str) -> None:
    check = SymbolCheck(verdict, ("NOPETRY",) if verdict == "unknown" else (),
                        error="connection refused" if verdict == "unreachable" else "",
                        url="http://x/api/v2/server/exchangeinfo")
    got, message = judge(mode, check)
    assert got == action
    if mode == "paper" and verdict == "unreachable":  # another supervisor's simulator
        assert judge(mode, check, simulator_ours=False)[0] == "warn"
    if verdict == "unknown":
        assert message.startswith("marketdata.symbols: not listed") and "NOPETRY" in message
    if verdict == "unreachable":
        assert "connection refused" in message and "http://x/" in message


# --- a real start --------------------------------------------------------------------

ACTOR_LOGS = ("recorder.log", "executor.log", "marketdata.log", "risk.log", "strategy.log")


def test_start_refuses_an_unknown_symbol_before_any_actor_runs(make_pipeline: Any) -> None:
    p = make_pipeline({"marketdata": {"symbols": ["BTCTRY", "NOPETRY"]}})
    r = p.cli("start", "--detach")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "marketdata.symbols: not listed by the exchange's exchangeinfo" in r.stderr, r.stderr
    assert "NOPETRY" in r.stderr and "BTCTRY" not in r.stderr.split("NOPETRY")[0][-20:]
    logs = p.config.parent / "logs"
    assert not [n for n in ACTOR_LOGS if (logs / n).exists()], sorted(os.listdir(logs))
    assert "NOPETRY" in (logs / "supervisor.log").read_text()
    assert processes_using(p.config) == []  # the simulator and the bus were stopped


def test_start_refuses_a_world_writable_log_dir(make_pipeline: Any) -> None:
    p = make_pipeline()
    logs = p.config.parent / "logs"
    logs.mkdir()
    os.chmod(logs, 0o777)
    r = p.cli("start", "--detach")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"unsafe directory: log_dir {logs}: writable by everyone (mode 777)" in r.stderr
    assert os.listdir(logs) == [] and processes_using(p.config) == []


def test_a_started_pipeline_writes_only_owner_only_files(make_pipeline: Any) -> None:
    p = make_pipeline()
    root = p.config.parent
    logs = root / "logs"
    logs.mkdir()
    os.chmod(logs, 0o755)
    (logs / "old.log").write_text("from an older version\n")
    os.chmod(logs / "old.log", 0o644)
    try:
        r = p.cli("start", "--detach")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert f"warning: log_dir {logs}: was readable by others (mode 755)" in r.stderr
        status = p.status()
        assert all(a["ready"] for a in status["actors"])
        seen = 0
        for name in ("run", "logs", "data", "recordings"):
            top = root / name
            assert _mode(top) == 0o700, name
            for dirpath, dirnames, filenames in os.walk(top):
                for d in dirnames:
                    assert _mode(Path(dirpath, d)) == 0o700, Path(dirpath, d)
                for f in filenames:
                    path = Path(dirpath, f)
                    if stat.S_ISREG(path.lstat().st_mode):
                        seen += 1
                        assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
        assert seen >= 10  # logs of every actor, the DBs, a recording segment, pid/lock
    finally:
        p.stop()
        kill_all(p.config)


def test_live_start_refuses_an_unknown_symbol_before_preflight(tmp_path: Any, sim: Any) -> None:
    """Live mode has no embedded simulator to wait for: `start` asks the exchange itself
    (here the simulator standing in for BTCTurk) before preflight and before any process."""
    doc = base_config(tmp_path, mode="live",
                      gates={"live_trading": True, "live_trading_ack": "I_UNDERSTAND"},
                      exchange={"rest_url": sim.base_url, "ws_url": sim.ws_url},
                      marketdata={"symbols": ["BTCTRY", "NOPETRY"]})
    cfg = write_config(tmp_path, doc)
    env = {**os.environ, "BTCTURK_API_KEY": sim.api_key, "BTCTURK_API_SECRET": sim.api_secret}
    r = subprocess.run([*SUPERVISOR, "--config", str(cfg), "start", "--detach"], env=env,
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "marketdata.symbols: not listed by the exchange's exchangeinfo" in r.stderr
    assert "NOPETRY" in r.stderr and "preflight" not in r.stdout + r.stderr
    assert not (tmp_path / "run" / "supervisor.pid").exists()
    # unreachable in live mode: refused, exit 1, naming the URL
    doc["exchange"]["rest_url"] = "http://127.0.0.1:9"
    write_config(tmp_path, doc)
    r = subprocess.run([*SUPERVISOR, "--config", str(cfg), "start", "--detach"], env=env,
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "cannot check marketdata.symbols: exchangeinfo at http://127.0.0.1:9" in r.stderr
    assert "not starting (live mode)" in r.stderr
