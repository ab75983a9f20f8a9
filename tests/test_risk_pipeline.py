"""Multi-process, paper mode: simulator books -> marketdata -> strategy -> risk ->
executor -> simulator; freezing the simulator's book stops approvals within
max_data_age, and risk then rejects with ``market_data:stale``."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from decimal import Decimal
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bus.auth import BusAuth, load_for
from bus.messages import (
    FeedStatus,
    Heartbeat,
    Intent,
    IntentAck,
    RiskDecision,
    SubmitIntent,
    packet_decoder,
)
from bus.transport import Publisher, RequestClient, new_incarnation
from shared.config import load_config
from tests.helpers import wait_for

MAX_AGE_S = 2.0
SYMBOLS = ["BTCTRY", "ETHTRY"]


class BusTap:
    """A SUB socket on the bus collecting decisions and feed statuses with their
    envelope wall time."""

    def __init__(self, endpoint: str, auth: BusAuth) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        for t in ("decision.", "md.status"):
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        auth.client(self.sock, "bus")
        self.sock.connect(endpoint)
        self.decisions: list[tuple[int, RiskDecision]] = []
        self.status: dict[str, FeedStatus] = {}

    def drain(self) -> None:
        while self.sock.poll(0):
            _topic, payload = self.sock.recv_multipart()
            pkt = packet_decoder.decode(payload)
            if isinstance(pkt.body, RiskDecision):
                self.decisions.append((pkt.env.wall_ns, pkt.body))
            elif isinstance(pkt.body, FeedStatus):
                self.status[pkt.body.symbol] = pkt.body

    def accepted(self) -> list[tuple[int, RiskDecision]]:
        self.drain()
        return [(t, d) for t, d in self.decisions
                if d.verdict != "rejected" and d.executor_status.startswith("accepted")]

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def sim_admin(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def strategy_publisher(cfg: Any) -> tuple[zmq.Context, Publisher]:
    """A publisher with the strategy's key (only it may publish intent.*), connected for
    sure: a probe on an intent.* topic (a heartbeat body, which risk ignores) is sent
    until it comes back through the proxy."""
    auth = load_for(cfg.data_path, "strategy")
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.bus_pub_endpoint, "strategy", new_incarnation(), auth=auth)
    probe = ctx.socket(zmq.SUB)
    probe.setsockopt(zmq.LINGER, 0)
    probe.setsockopt(zmq.SUBSCRIBE, b"intent.probe")
    auth.client(probe, "bus")
    probe.connect(cfg.bus_sub_endpoint)
    beat = Heartbeat(actor="strategy", pid=0, state="READY", ready=True, uptime_s=0.0,
                     counters={})
    try:
        for _ in range(200):
            pub.publish(beat, "intent.probe")
            if probe.poll(50, zmq.POLLIN):
                return ctx, pub
        raise AssertionError("the test's strategy publisher never reached the bus")
    finally:
        probe.close(linger=0)


async def submit_to_risk(cfg: Any, symbol: str) -> IntentAck:
    """As the strategy submits: the request, and the intent's copy on the bus (where
    risk judges it)."""
    pub_ctx, pub = strategy_publisher(cfg)
    ctx = zmq.asyncio.Context()
    client = RequestClient(ctx, cfg.command_endpoint("risk"), load_for(cfg.data_path, "strategy"),
                           server="risk", timeout_s=10.0, retries=0)
    try:
        intent = Intent(intent_id=f"probe-{symbol}-{time.time_ns()}", symbol=symbol, side="buy",
                        order_type="limit", price=Decimal("200000"), quantity=Decimal("0.001"),
                        reason="probe", ttl_s=10, strategy="test",
                        created_wall_ns=time.time_ns())
        reply = await client.request(SubmitIntent(intent=intent),
                                     after_send=lambda: pub.publish(intent))
        assert isinstance(reply, IntentAck)
        return reply
    finally:
        client.close()
        ctx.destroy(0)
        pub_ctx.destroy(linger=200)


def test_books_lead_to_orders_and_frozen_book_stops_approvals(make_pipeline):
    pipeline = make_pipeline({
        "actors": {"reconciler": {"enabled": False}, "recorder": {"enabled": False}},
        "marketdata": {"symbols": SYMBOLS, "max_data_age_s": MAX_AGE_S},
        "strategy": {"trade_every_tick": True, "reject_backoff_s": 0.2},
        "risk": {"cooldown_s": 0.3, "max_open_orders_per_symbol": 10_000,
                 "max_orders_per_minute": 10_000, "max_position_try_per_symbol": "100000000"},
    })
    cfg = load_config(pipeline.config)
    port = cfg.simulator.port
    pipeline.start()
    tap = BusTap(cfg.bus_sub_endpoint, load_for(cfg.data_path, "operator"))
    try:
        # 1. Books from the simulator become orders that reach the executor and the sim.
        wait_for(lambda: len(tap.accepted()) >= 4, timeout=30, what="accepted orders")
        cids = {d.client_order_id for _, d in tap.accepted()}
        assert all(c.startswith(cfg.executor.client_id_prefix + "-") for c in cids)

        def reached_sim() -> bool:
            got = {o["newOrderClientId"] for o in sim_admin(port, "GET", "/sim/received-orders")}
            return len(cids & got) >= 2

        wait_for(reached_sim, timeout=15, what="orders at the simulator")

        # 2. Freeze every book: within max_data_age approvals stop and the feed is stale.
        sim_admin(port, "POST", "/sim/faults", {"kind": "frozen_book"})
        frozen_ns = time.time_ns()

        def all_stale() -> bool:
            tap.drain()
            return all(s in tap.status and not tap.status[s].fresh for s in SYMBOLS)

        wait_for(all_stale, timeout=MAX_AGE_S + 4, what="md.status stale")
        time.sleep(1.0)
        deadline = frozen_ns + int((MAX_AGE_S + 0.5) * 1e9)
        late = [d for t, d in tap.accepted() if t > deadline]
        assert late == [], f"approvals after the book froze: {late}"

        # 3. Risk itself fails closed on the stale feed (not only a quiet strategy).
        for symbol in SYMBOLS:
            ack = asyncio.run(submit_to_risk(cfg, symbol))
            assert ack.verdict == "rejected" and "market_data:stale" in ack.reasons, ack

        # 4. Thawed: data is fresh again and approvals resume.
        sim_admin(port, "DELETE", "/sim/faults")
        thawed = time.time_ns()
        wait_for(lambda: any(t > thawed for t, _ in tap.accepted()), timeout=20,
                 what="approvals after thaw")
    finally:
        tap.close()


def test_decision_messages_roundtrip():
    """The decision published by risk is a plain bus message (strict decode)."""
    d = RiskDecision(intent_id="i", symbol="BTCTRY", verdict="rejected",
                     reasons=["market_data:stale"], side="buy", order_type="limit",
                     price=Decimal(1), quantity=Decimal(0), requested_quantity=Decimal(1))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(d), type=RiskDecision) == d
