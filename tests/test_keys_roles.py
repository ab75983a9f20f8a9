"""CURVE keys on disk (bus/auth.py), the roles table (bus/roles.py) and their CLI:
`btcbot-supervisor keys init|show|export|import` and `roles`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus import roles
from bus.auth import (
    BusAuth,
    KeysError,
    Roster,
    ensure_keys,
    keys_dir_of,
    load_for,
    load_roster,
)
from bus.messages import SetLatch, SupervisorCommand
from tests.helpers import REPO, SUPERVISOR


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_first_start_makes_private_keys_and_one_roster(tmp_path: Path) -> None:
    d = keys_dir_of(tmp_path / "data")
    roster = ensure_keys(d)
    assert set(roster.keys) == set(roles.IDENTITIES)
    assert mode(d) == 0o700
    for name in roles.IDENTITIES:
        assert mode(d / f"{name}.key_secret") == 0o600
        assert load_for(tmp_path / "data", name).public == roster.keys[name]
    # A second start keeps every key (a new key would lock out the other host's copy).
    assert ensure_keys(d).keys == roster.keys
    assert load_roster(d).keys == roster.keys


def test_missing_or_mismatched_keys_fail_loudly_naming_the_file(tmp_path: Path) -> None:
    d = keys_dir_of(tmp_path)
    with pytest.raises(KeysError, match="executor.key_secret"):
        load_for(tmp_path, "executor")
    ensure_keys(d, ["executor", "risk"])
    roster = load_roster(d)
    (d / "roster.json").write_bytes(Roster({**roster.keys, "executor": roster.keys["risk"]})
                                    .to_json())
    with pytest.raises(KeysError, match="roster's public key for 'executor'"):
        load_for(tmp_path, "executor")
    (d / "roster.json").write_text("{not json")
    with pytest.raises(KeysError, match="not JSON"):
        ensure_keys(d)  # a corrupt roster is never overwritten
    assert (d / "roster.json").read_text() == "{not json"


@given(doc=st.one_of(st.text(max_size=50), st.dictionaries(st.text(max_size=10),
                                                          st.text(max_size=50), max_size=3)))
def test_a_roster_from_anywhere_is_validated_or_refused(doc: object) -> None:
    raw = doc if isinstance(doc, str) else json.dumps({"version": 1, "keys": doc})
    try:
        roster = Roster.from_json(raw)
    except KeysError:
        return
    for name, key in roster.keys.items():
        assert len(key) == 40 and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def test_every_topic_has_one_publisher_and_heartbeats_only_their_own() -> None:
    topics = ["md.book.BTCTRY", "md.trade.BTCTRY", "md.status", "md.rules.BTCTRY",
              "intent.BTCTRY", "decision.BTCTRY", "order.BTCTRY", "fill.BTCTRY", "portfolio",
              "control", "reconcile.report", "incident.disk"]
    for topic in topics:
        live = [n for n in roles.IDENTITIES if roles.may_publish(n, topic)]
        assert len(live) == 1, (topic, live)
    for name in roles.ACTORS:
        assert roles.may_publish(name, f"hb.{name}")
        assert [n for n in roles.IDENTITIES if roles.may_publish(n, f"hb.{name}")] == [name]
    assert not roles.may_publish("executor", "hb.executorX")  # exact, not a prefix
    assert not roles.may_publish("nobody", "hb.nobody")
    assert not roles.may_publish(roles.REPLAY, "hb.executor")
    assert not roles.may_publish(roles.REPLAY, "control")


def test_commands_follow_the_issue() -> None:
    assert roles.callers("executor", "SubmitOrder") == ["risk"]
    assert roles.callers("executor", "CancelOrder") == ["risk"]
    clear = roles.command_name(SetLatch(latch="kill_switch", value=False))
    assert roles.callers("executor", clear) == ["supervisor"]
    assert set(roles.callers("executor", "SetLatch.set")) == {"supervisor", "reconciler"}
    stop = roles.command_name(SupervisorCommand(command="stop"))
    assert set(roles.callers("supervisor", stop)) == {"operator", "dashboard"}
    assert not roles.may_call("executor", "strategy", "SubmitOrder")
    assert not roles.may_call("executor", "", "SnapshotQuery")  # no identity, nothing


def test_publish_gate_is_bounded() -> None:
    gate = roles.PublishGate(max_entries=10)
    for i in range(100):
        assert not gate.allowed("strategy", f"md.book.{i}".encode())
    assert gate.allowed("strategy", b"intent.X")
    assert len(gate._cache) <= 10
    assert not gate.allowed("strategy", b"\xff\xfe")


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPERVISOR, "--config", str(config), *args], capture_output=True,
                          text=True, cwd=REPO, input=stdin, timeout=60, check=False)


def host(tmp: Path, name: str) -> Path:
    root = tmp / name
    root.mkdir(mode=0o700)
    cfg = root / "supervisor.toml"
    cfg.write_text(f'runtime_dir = "{root}/run"\nlog_dir = "{root}/logs"\n'
                   f'data_dir = "{root}/data"\n')
    return cfg


def test_keys_cli_moves_public_keys_between_hosts_and_never_a_secret(tmp_path: Path) -> None:
    a, b = host(tmp_path, "a"), host(tmp_path, "b")
    assert cli(a, "keys", "init").returncode == 0
    assert cli(b, "keys", "init").returncode == 0
    exported = cli(b, "keys", "export", "--only", "marketdata,strategy")
    assert exported.returncode == 0, exported.stderr
    doc = json.loads(exported.stdout)
    assert set(doc["keys"]) == {"marketdata", "strategy"}
    secrets = [p.read_text() for p in (tmp_path / "b" / "data" / "keys").glob("*.key_secret")]
    assert not any(s.split("secret-key = ")[1][:40] in exported.stdout for s in secrets)
    # Host a holds the secrets of its own marketdata and strategy: importing b's keys for
    # them would lock its own processes out, so it is refused, and nothing changes.
    before = (tmp_path / "a" / "data" / "keys" / "roster.json").read_text()
    r = cli(a, "keys", "import", "-", stdin=exported.stdout)
    assert r.returncode == 2 and "would replace" in r.stderr
    r = cli(a, "keys", "import", "-", "--replace", stdin=exported.stdout)
    assert r.returncode == 2 and "holds that identity's secret key" in r.stderr
    assert (tmp_path / "a" / "data" / "keys" / "roster.json").read_text() == before
    # A host without those identities' secrets (they run on b) takes b's keys.
    for n in ("marketdata", "strategy"):
        (tmp_path / "a" / "data" / "keys" / f"{n}.key_secret").unlink()
    r = cli(a, "keys", "import", "-", "--replace", stdin=exported.stdout)
    assert r.returncode == 0, r.stderr
    shown = json.loads(cli(a, "keys", "show", "--json").stdout)
    row = {x["identity"]: x for x in shown}
    assert row["strategy"]["public_key"] == doc["keys"]["strategy"]
    assert not row["strategy"]["secret_here"] and row["risk"]["secret_here"]
    # The next start (keys init does what start does) mints nothing for them: they run on b.
    assert cli(a, "keys", "init").returncode == 0
    assert load_roster(tmp_path / "a" / "data" / "keys").keys["strategy"].decode() == \
        doc["keys"]["strategy"]
    assert not (tmp_path / "a" / "data" / "keys" / "strategy.key_secret").exists()
    garbage = cli(a, "keys", "import", "-", stdin='{"version": 1, "keys": {"x": "short"}}')
    assert garbage.returncode == 2 and "40 Z85 characters" in garbage.stderr


def test_roles_cli_prints_the_table(tmp_path: Path) -> None:
    text = cli(host(tmp_path, "a"), "roles")
    assert text.returncode == 0
    assert "executor    <- risk        SubmitOrder, CancelOrder" in text.stdout
    doc = json.loads(cli(host(tmp_path, "b"), "roles", "--json").stdout)
    assert doc["commands"]["executor"]["risk"][:2] == ["SubmitOrder", "CancelOrder"]
    assert "md.book." in doc["publish"]["marketdata"]


def test_an_actor_without_its_key_exits_2_naming_it(tmp_path: Path) -> None:
    cfg = host(tmp_path, "a")
    r = subprocess.run([sys.executable, "-m", "actors.reconciler", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert "reconciler.key_secret" in r.stderr + (tmp_path / "a" / "logs" /
                                                   "reconciler.log").read_text()


def test_an_unknown_identity_has_no_keys() -> None:
    with pytest.raises(KeysError):
        BusAuth("Bad Name", b"", b"", Roster({}))


def test_status_sums_the_refusals_and_names_who_counted_them() -> None:
    from actors.supervisor.status import render_security, security_summary

    actors = [{"name": "bus", "counters": {"auth_refused_unknown_key": 2,
                                           "proxy_dropped_forbidden_topic": 15}},
              {"name": "executor", "counters": {"auth_refused_unknown_key": 1,
                                                "cmd_unauthorized": 4}},
              {"name": "risk", "counters": {}}]
    sec = security_summary(actors, {"cmd_unauthorized": 2, "heartbeat_mismatches": 0})
    assert sec["unknown_keys"] == 3 and sec["unauthorized_commands"] == 6
    assert sec["forbidden_topics"] == 15 and sec["failed_handshakes"] == 0
    assert sec["where"]["unauthorized_commands"] == {"executor": 4, "supervisor": 2}
    line = render_security(sec)
    assert line.startswith("bus security: REFUSED unknown keys 3 (bus, executor)")
    assert "failed handshakes" not in line
    quiet = security_summary([{"name": "bus", "counters": {}}], {})
    assert render_security(quiet) == "bus security: nothing refused (CURVE on every socket)"
