"""incident bundle: what is in it, the window, and a scan proving no secret is."""

from __future__ import annotations

import gzip
import json
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.supervisor.bundle import log_window, parse_duration, redact
from shared.recording import read_recording
from tests.helpers import wait_for

LIVE_KEY = "LIVEKEY-0123456789abcdef"
LIVE_SECRET = "bGl2ZS1zZWNyZXQtdGhhdC1tdXN0LW5ldmVyLWxlYWsh"
CURVE_SECRET = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
BOT_TOKEN = "123456:AAbbCCddEEffGGhhIIjjKKllMMnnOO"


def test_parse_duration_and_redact() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration("90") == 90 and parse_duration("1.5s") == 1.5
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert redact(f"k={LIVE_KEY} s={LIVE_SECRET}", {LIVE_KEY, LIVE_SECRET}) == \
        "k=<redacted> s=<redacted>"


@given(st.lists(st.text(min_size=6, max_size=30), min_size=1, max_size=4), st.text(max_size=200),
       st.integers(0, 3))
def test_redact_leaves_no_secret(secrets: list[str], noise: str, copies: int) -> None:
    """Whatever the secrets and however they are embedded (overlapping, repeated, one
    inside another), none survives redaction."""
    text = noise.join(secrets * (copies + 1)) + noise
    out = redact(text, set(secrets))
    for s in secrets:
        if s not in "<redacted>":
            assert s not in out, s


def test_log_window_keeps_tracebacks_with_their_line(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("2020-01-01 00:00:00.000 | INFO    | x | old\n"
                   "2999-01-01 00:00:00.000 | ERROR   | x | new\n"
                   "Traceback (most recent call last):\n"
                   "  boom\n")
    kept = log_window(log, since=time.time())
    assert "old" not in kept and "new" in kept and "boom" in kept


def test_bundle_of_a_paper_session_holds_no_secret(make_pipeline, tmp_path: Path) -> None:
    p = make_pipeline({"alerts": {"webhooks": [
        {"url": f"http://127.0.0.1:9/bot{BOT_TOKEN}/sendMessage", "format": "telegram",
         "chat_id": "987654321"}]}})
    p.start()
    wait_for(lambda: any(read_recording(tmp_path / "recordings", topics=["md.book"])),
             timeout=30, what="recorded books")
    keys = tmp_path / "data" / "keys"  # made by the supervisor at its first start
    keys.mkdir(parents=True, mode=0o700, exist_ok=True)
    (keys / "planted.key_secret").write_text(
        f'metadata\ncurve\n    public-key = "abcdefabcdefabcdefabcdefabcdefabcdefabcd"\n'
        f'    secret-key = "{CURVE_SECRET}"\n')
    # a careless line that reached a log: the bundle must still not carry it
    with open(tmp_path / "logs" / "risk.log", "a") as fh:
        fh.write(time.strftime("%Y-%m-%d %H:%M:%S.000") + f" | INFO    | risk | leaked "
                 f"{LIVE_KEY} {LIVE_SECRET}\n")

    p.env.update({"BTCTURK_API_KEY": LIVE_KEY, "BTCTURK_API_SECRET": LIVE_SECRET})
    out = tmp_path / "bundle.tar.gz"
    r = p.cli("incident", "bundle", "--since", "10m", "--out", str(out), "--with-db", "--json",
              timeout=120)
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert out.stat().st_mode & 0o077 == 0

    with tarfile.open(out) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()
                 if m.isfile()}
    for name in ("status.json", "db_summary.json", "config.json", "versions.json",
                 "MANIFEST.json", "logs/executor.log", "logs/risk.log"):
        assert name in files, (name, sorted(files))
    assert any(n.startswith("recordings/rec-") for n in files), sorted(files)
    assert manifest["recording_records"] > 0
    status = json.loads(files["status.json"])
    assert status["running"] is True and status["actors"]
    summary = json.loads(files["db_summary.json"])
    assert summary["schema_version"] >= 2 and "latches" in summary
    versions = json.loads(files["versions.json"])
    assert {"python", "pyzmq", "libzmq", "msgspec", "apsw"} <= set(versions)
    config = json.loads(files["config.json"])
    assert config["exchange"]["api_key"] == "<redacted>"
    assert config["alerts"]["webhooks"][0]["url"] == "<redacted>"
    assert "<redacted>" in files["logs/risk.log"].decode()

    # the scan: no secret anywhere, in any member, nor in the compressed stream
    raw = gzip.decompress(out.read_bytes())
    for secret in (LIVE_KEY, LIVE_SECRET, CURVE_SECRET, BOT_TOKEN):
        assert secret.encode() not in raw, secret
        for name, data in files.items():
            assert secret.encode() not in data, (secret, name)
    assert "keys/" not in " ".join(files)

    text = p.cli("incident", "bundle", "--since", "1m", "--out", str(tmp_path / "b2.tar.gz"))
    assert text.returncode == 0 and "wrote" in text.stdout and "\r" not in text.stdout
