"""Marketdata as a real process against the simulator: fail loudly at start on an
unknown symbol or on a missing WebSocket without REST fallback (the old bot silently
ran without one); publish fresh books and rules otherwise."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import zmq

from bus.auth import ensure_keys, keys_dir_of, load_for
from bus.messages import BookSnapshot, FeedStatus, PublicTrade, SymbolRules, packet_decoder
from shared.config import load_config
from tests.helpers import REPO, free_port, to_toml


def write_cfg(tmp: Path, sim, **md) -> Path:
    doc = {
        "mode": "paper", "runtime_dir": str(tmp / "run"), "log_dir": str(tmp / "logs"),
        "data_dir": str(tmp / "data"),
        "exchange": {"rest_url": sim.base_url, "ws_url": md.pop("ws_url", sim.ws_url)},
        "marketdata": {"symbols": ["BTCTRY", "ETHTRY"], "ws_connect_timeout_s": 1.0,
                       "max_data_age_s": 2.0, **md},
    }
    (tmp / "run").mkdir(mode=0o700, exist_ok=True)
    ensure_keys(keys_dir_of(tmp / "data"))  # as the supervisor does at its first start
    path = tmp / "supervisor.toml"
    path.write_text(to_toml(doc))
    return path


def run_md(cfg: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actors.marketdata", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@contextlib.contextmanager
def marketdata_alone(cfg_path: Path, prefix: bytes) -> Iterator[zmq.Socket]:
    """The marketdata process with a plain SUB (subscribed to ``prefix``) bound where its
    publisher connects, in the proxy's place and with its key; no other actor."""
    cfg = load_config(cfg_path)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, prefix)
    bus = load_for(cfg.data_path, "bus")
    bus.server(sub)
    sub.bind(cfg.bus_pub_endpoint)
    proc = subprocess.Popen([sys.executable, "-m", "actors.marketdata", "--config",
                             str(cfg_path)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield sub
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        sub.close(0)
        bus.close()
        ctx.term()


def test_unknown_symbol_fails_at_start(tmp_path, sim):
    r = run_md(write_cfg(tmp_path, sim, symbols=["BTCTRY", "NOPETRY"]))
    assert r.returncode == 2
    log = (tmp_path / "logs" / "marketdata.log").read_text()
    assert "NOPETRY" in log and "marketdata.symbols" in log


def test_ws_without_connection_and_without_fallback_fails_at_start(tmp_path, sim):
    bad_ws = f"ws://127.0.0.1:{free_port()}/ws"
    r = run_md(write_cfg(tmp_path, sim, ws_url=bad_ws, rest_fallback=False))
    assert r.returncode == 1
    log = (tmp_path / "logs" / "marketdata.log").read_text()
    assert "no WebSocket connection" in log and "rest_fallback is false" in log


def test_rest_fallback_publishes_books_when_ws_is_down(tmp_path, sim):
    """The bus is a plain SUB bound where the actor's publisher connects (no proxy)."""
    bad_ws = f"ws://127.0.0.1:{free_port()}/ws"
    cfg_path = write_cfg(tmp_path, sim, ws_url=bad_ws, rest_fallback=True,
                         rest_poll_interval_s=0.2)
    cfg = load_config(cfg_path)
    seen: dict[str, object] = {}
    with marketdata_alone(cfg_path, b"md.") as sub:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"rules", "book", "fresh"} <= set(seen):
            if sub.poll(200):
                _t, payload = sub.recv_multipart()
                body = packet_decoder.decode(payload).body
                if isinstance(body, SymbolRules):
                    seen["rules"] = body
                elif isinstance(body, BookSnapshot) and body.source == "rest":
                    seen["book"] = body
                elif isinstance(body, FeedStatus) and body.fresh and body.source == "rest":
                    seen["fresh"] = body
    assert {"rules", "book", "fresh"} <= set(seen), seen
    b = seen["book"]
    assert isinstance(b, BookSnapshot) and b.bids[0][0] < b.asks[0][0]
    assert len(b.bids) <= cfg.marketdata.depth


def test_ws_public_trades_are_published_once_each(tmp_path, sim):
    """The simulator's random walk prints public trades on the WS ``trade`` channel;
    marketdata publishes each live one on ``md.trade.<SYM>`` exactly once, and not the
    join snapshot's history (its 421 trades were not seen happening)."""
    cfg_path = write_cfg(tmp_path, sim)
    sim.set_walk(True)
    trades: list[PublicTrade] = []
    topics: list[bytes] = []
    started_ms = int(time.time() * 1000)
    with marketdata_alone(cfg_path, b"md.trade.") as sub:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(trades) < 10:
            if sub.poll(200):
                topic, payload = sub.recv_multipart()
                body = packet_decoder.decode(payload).body
                assert isinstance(body, PublicTrade)
                trades.append(body)
                topics.append(topic)
    assert len(trades) >= 10, f"only {len(trades)} trades in 20 s"
    ids = [(t.symbol, t.trade_id) for t in trades]
    assert len(ids) == len(set(ids)), "a trade was published twice"
    for topic, t in zip(topics, trades, strict=True):
        assert topic == f"md.trade.{t.symbol}".encode()
        assert t.symbol in ("BTCTRY", "ETHTRY")
        assert t.price > 0 and t.quantity > 0 and t.side in ("buy", "sell")
        # live trades only: none older than the subscription (the snapshot's history is)
        assert t.exchange_ts_ms >= started_ms - 1000, t
