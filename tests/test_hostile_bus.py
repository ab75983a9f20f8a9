"""A hostile bus (issue 16): processes that hold no key, an unknown key, or a real but
wrong key (the strategy's) attack a running paper pipeline; everything is refused,
counted where the operator sees it (heartbeat counters in status), and nothing
changes: no order, no latch, no restart. Then hypothesis throws random frames at the
proxy and at a command server (in-process, real sockets, CURVE on)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.auth import BusAuth, Keyset
from bus.messages import (
    Ack,
    BookSnapshot,
    CancelOrder,
    CommandRequest,
    Control,
    ExecutorCommand,
    Heartbeat,
    OrderRequest,
    Ping,
    SetLatch,
    SnapshotQuery,
    SubmitOrder,
    SupervisorCommand,
    packet_encoder,
)
from bus.proxy import FrameProxy
from bus.roles import may_publish
from bus.transport import Publisher, RequestClient, RequestFailed, RequestServer
from shared.config import load_config
from tests.helpers import Pipeline, bus_auth, started_pipeline, wait_for
from tests.keys import auth

# --- a live paper pipeline under attack -------------------------------------------------


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with started_pipeline(tmp_path_factory.mktemp("hostile")) as p:
        yield p


def actors(p: Pipeline) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in p.status()["actors"]}


def counter(p: Pipeline, actor: str, name: str) -> int:
    return int(actors(p)[actor]["counters"].get(name, 0))


def received_orders(p: Pipeline) -> list[dict[str, Any]]:
    port = load_config(p.config).simulator.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/received-orders",
                                timeout=5) as r:
        orders: list[dict[str, Any]] = json.loads(r.read())
    return orders


def stranger() -> BusAuth:
    """A well-formed CURVE identity nobody put in the roster."""
    return Keyset(["strategy"]).auth("strategy")


def with_server_keys(impostor: BusAuth, real: BusAuth) -> BusAuth:
    """The impostor knows the servers' public keys (they are public), not a roster key."""
    impostor.roster = real.roster
    return impostor


def forged_order() -> OrderRequest:
    return OrderRequest(client_order_id="forged-1", intent_id="forged-1", symbol="BTCTRY",
                        side="buy", order_type="limit", price=Decimal("2000000"),
                        quantity=Decimal("0.03"), ttl_s=60.0, reason="forged")


async def ask(cfg_path: Path, who: BusAuth, server: str, body: Any) -> Any:
    cfg = load_config(cfg_path)
    endpoint = cfg.supervisor_endpoint if server == "supervisor" else \
        cfg.command_endpoint(server)
    ctx = zmq.asyncio.Context()
    client = RequestClient(ctx, endpoint, who, server=server, timeout_s=2.0, retries=0)
    try:
        return await client.request(body)
    finally:
        client.close()
        ctx.destroy(0)


def test_no_key_and_unknown_keys_cannot_connect(pipe: Pipeline) -> None:
    cfg = load_config(pipe.config)
    bus_before = actors(pipe)["bus"]["counters"]
    ex_before = actors(pipe)["executor"]["counters"]
    ctx = zmq.Context()
    try:
        # No CURVE at all: the handshake fails before a byte of data moves.
        plain = ctx.socket(zmq.SUB)
        plain.setsockopt(zmq.SUBSCRIBE, b"")
        plain.connect(cfg.bus_sub_endpoint)
        # A CURVE key that is not in the roster, on the publish side and at the executor.
        intruder = with_server_keys(stranger(), bus_auth(pipe.config, "operator"))
        pub = ctx.socket(zmq.PUB)
        intruder.client(pub, "bus")
        pub.connect(cfg.bus_pub_endpoint)
        dealer = ctx.socket(zmq.DEALER)
        intruder.client(dealer, "executor")
        dealer.connect(cfg.command_endpoint("executor"))
        req = CommandRequest("x1", "risk", SubmitOrder(order=forged_order()))
        dealer.send_multipart([b"", packet_encoder.encode(req)])
        for _ in range(20):
            pub.send_multipart([b"md.book.BTCTRY", b"\x00"])
            time.sleep(0.05)
        assert not plain.poll(1000), "a plaintext subscriber received bus traffic"
        assert not dealer.poll(500), "an unknown key got an answer from the executor"
        for s in (plain, pub, dealer):
            s.close(linger=0)
    finally:
        ctx.term()

    def refused() -> bool:
        bus, ex = actors(pipe)["bus"]["counters"], actors(pipe)["executor"]["counters"]
        return (bus.get("auth_handshake_failed", 0) > bus_before.get("auth_handshake_failed", 0)
                and bus.get("auth_refused_unknown_key", 0)
                > bus_before.get("auth_refused_unknown_key", 0)
                and ex.get("auth_refused_unknown_key", 0)
                > ex_before.get("auth_refused_unknown_key", 0))

    wait_for(refused, timeout=10, what="the refusals counted in bus and executor heartbeats")
    assert not [o for o in received_orders(pipe) if "forged" in json.dumps(o)]


def test_the_strategy_key_can_do_only_what_the_strategy_may(pipe: Pipeline) -> None:
    pids = pipe.pids()
    strategy = bus_auth(pipe.config, "strategy")
    before = {n: dict(a["counters"]) for n, a in actors(pipe).items()}
    latch_before = pipe.status()["latch"]

    def refused(server: str, body: Any) -> str:
        with pytest.raises(RequestFailed) as exc:
            asyncio.run(ask(pipe.config, strategy, server, body))
        return str(exc.value)

    # Commands: refused with the reason, before any handler runs.
    assert "strategy may not send SubmitOrder to executor" in refused(
        "executor", SubmitOrder(order=forged_order()))
    assert "may not send CancelOrder to executor" in refused(
        "executor", CancelOrder(client_order_id="whatever"))
    assert "may not send SetLatch.clear" in refused(
        "executor", SetLatch(latch="kill_switch", value=False, reason="forged"))
    assert "may not send SetLatch.set" in refused(
        "executor", SetLatch(latch="kill_switch", value=True, reason="forged"))
    assert "may not send stop to supervisor" in refused(
        "supervisor", SupervisorCommand(command="stop"))
    assert "may not send kill_switch" in refused(
        "supervisor", SupervisorCommand(command="kill_switch", value=False))
    # What the strategy may do still works with the same key.
    assert asyncio.run(ask(pipe.config, strategy, "executor", SnapshotQuery())) is not None

    # Publishing: the proxy drops every topic outside the strategy's role.
    cfg = load_config(pipe.config)
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.bus_pub_endpoint, "executor", "forged-1", auth=strategy)
    try:
        time.sleep(0.5)  # slow joiner
        now = time.time_ns()
        for _ in range(5):
            pub.publish(Control(target="*", command="shutdown"), "control")
            pub.publish(Heartbeat(actor="executor", pid=pids["executor"], state="READY",
                                  ready=True, uptime_s=1.0, counters={}), "hb.executor")
            pub.publish(BookSnapshot(symbol="BTCTRY", bids=[(Decimal(1), Decimal(1))],
                                     asks=[(Decimal(2), Decimal(1))], source="ws",
                                     exchange_ts_ms=now // 1_000_000, recv_wall_ns=now,
                                     recv_mono_ns=time.monotonic_ns(), age_ms=0),
                        "md.book.BTCTRY")
            time.sleep(0.02)
    finally:
        pub.close()
        ctx.destroy(linger=500)

    def counted() -> bool:
        bus = actors(pipe)["bus"]["counters"]
        return bus.get("proxy_forbidden_strategy", 0) \
            >= before["bus"].get("proxy_forbidden_strategy", 0) + 15
    wait_for(counted, timeout=10, what="15 forbidden frames counted by the proxy")
    after = actors(pipe)
    assert after["executor"]["counters"]["cmd_unauthorized"] \
        >= before["executor"].get("cmd_unauthorized", 0) + 4
    assert pipe.status()["supervisor"]["security"]["cmd_unauthorized"] >= 2
    sec = pipe.status()["security"]
    assert sec["forbidden_topics"] >= 15 and sec["unauthorized_commands"] >= 6, sec
    assert "bus security: REFUSED" in pipe.cli("status").stdout
    # No state change, no restart, no order.
    assert pipe.pids() == pids, "an actor stopped or restarted"
    assert pipe.status()["latch"] == latch_before
    assert all(a["ready"] for a in after.values()), after
    assert not [o for o in received_orders(pipe) if "forged" in json.dumps(o)]


# Every command socket of a pipeline: the two actors that serve commands, and the
# supervisor's control socket (the others serve none).
_servers = ["executor", "risk", "supervisor"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(_servers), payload=st.one_of(
    st.binary(max_size=200),
    st.builds(lambda body: packet_encoder.encode(CommandRequest("fz", "risk", body)),
              st.sampled_from([SubmitOrder(order=forged_order()),
                               SetLatch(latch="kill_switch", value=False),
                               SetLatch(latch="safety_latch", value=True)]))))
def test_random_frames_at_every_live_command_socket_are_refused(
        pipe: Pipeline, target: str, payload: bytes) -> None:
    """Every actor's command socket of the running pipeline, the strategy's key, random
    bytes or commands it may not send anywhere (orders, latches): always an answer, and
    it is a refusal."""
    cfg = load_config(pipe.config)
    ctx = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        bus_auth(pipe.config, "strategy").client(dealer, target)
        dealer.connect(cfg.supervisor_endpoint if target == "supervisor"
                       else cfg.command_endpoint(target))
        dealer.send_multipart([b"", payload])
        assert dealer.poll(5_000), f"{target} did not answer"
        reply = dealer.recv_multipart()[-1]
        assert b"refused" in reply, (target, reply[:200])
        dealer.close(linger=0)
    finally:
        ctx.term()


def test_after_the_fuzz_nothing_restarted(pipe: Pipeline) -> None:
    """Runs after the live fuzz (file order): every actor still on its first pid, READY."""
    status = pipe.status()
    assert all(a["restarts"] == 0 and a["ready"] for a in status["actors"]), status["actors"]
    assert not [o for o in received_orders(pipe) if "forged" in json.dumps(o)]


# --- hypothesis: random frames at the proxy and at a command server ---------------------


class ProxyRig:
    def __init__(self, tmp: Path) -> None:
        self.ctx = zmq.Context()
        self.bus = auth("bus")
        self.proxy = FrameProxy(self.ctx, f"ipc://{tmp}/in", f"ipc://{tmp}/out", hwm=10_000,
                                auth=self.bus)
        self.proxy.start()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        auth("supervisor").client(self.sub, "bus")
        self.sub.connect(f"ipc://{tmp}/out")
        self.pub = self.ctx.socket(zmq.PUB)
        auth("strategy").client(self.pub, "bus")
        self.pub.connect(f"ipc://{tmp}/in")
        # Joined once the subscription reached the publisher: a probe comes through.
        deadline = time.monotonic() + 10
        while not self.sub.poll(50):
            assert time.monotonic() < deadline, "proxy never forwarded the probe"
            self.pub.send_multipart([b"intent.PROBE", b"x"])
        while self.sub.poll(200):
            self.sub.recv_multipart()

    def seen(self) -> int:
        c = self.proxy.counters
        return c["proxy_forwarded"] + c["proxy_dropped"]

    def close(self) -> None:
        self.proxy.stop()
        for s in (self.sub, self.pub):
            s.close(linger=0)
        self.proxy.close()
        self.bus.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def proxy_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyRig]:
    rig = ProxyRig(tmp_path_factory.mktemp("proxy"))
    yield rig
    rig.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.one_of(st.binary(max_size=200),
                                 st.sampled_from([b"intent.BTCTRY", b"hb.executor", b"control",
                                                  b"md.book.BTCTRY", b"hb.strategy"])),
                       min_size=1, max_size=4))
def test_random_frames_into_the_proxy_are_forwarded_only_when_allowed(
        proxy_rig: ProxyRig, frames: list[bytes]) -> None:
    before = dict(proxy_rig.proxy.counters)
    seen = proxy_rig.seen()
    proxy_rig.pub.send_multipart(frames)
    deadline = time.monotonic() + 5
    while proxy_rig.seen() == seen:
        assert time.monotonic() < deadline, "the proxy never accounted for the frame"
        time.sleep(0.001)
    after = proxy_rig.proxy.counters
    topic = frames[0]
    try:
        allowed = len(frames) == 2 and len(topic) <= 128 and may_publish("strategy",
                                                                          topic.decode())
    except UnicodeDecodeError:
        allowed = False
    if allowed:
        assert after["proxy_forwarded"] == before.get("proxy_forwarded", 0) + 1
        assert proxy_rig.sub.poll(5000) and proxy_rig.sub.recv_multipart() == frames
    else:
        assert after["proxy_dropped"] == before.get("proxy_dropped", 0) + 1
        assert not proxy_rig.sub.poll(0)
    assert proxy_rig.proxy._thread is not None and proxy_rig.proxy._thread.is_alive()


_bodies = st.sampled_from([
    SubmitOrder(order=forged_order()), CancelOrder(client_order_id="c"),
    SetLatch(latch="kill_switch", value=False), SetLatch(latch="safety_latch", value=True),
    SnapshotQuery(), Ping(),
])


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda rid, body: packet_encoder.encode(CommandRequest(rid, "risk", body)),
              st.text(max_size=20), _bodies)), min_size=1, max_size=10))
def test_random_requests_to_the_executor_socket_are_refused_or_allowed_by_role(
        tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes]) -> None:
    """The strategy's key throws random bytes and real commands at an executor command
    server: garbage is refused as malformed, what the strategy may not send as
    unauthorized; the handler sees only SnapshotQuery and Ping, each with the strategy's
    authenticated identity, whatever the request claimed (it claims to be risk)."""
    endpoint = f"ipc://{tmp_path_factory.mktemp('cmd')}/cmd"
    handled: list[tuple[str, str]] = []

    async def handler(req: CommandRequest[Any]) -> Any:
        handled.append((req.sender, type(req.body).__name__))
        return Ack()

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        server_auth = auth("executor")
        server = RequestServer(ctx, endpoint, handler, commands=ExecutorCommand,
                               auth=server_auth)
        task = asyncio.create_task(server.serve())
        dealer = ctx.socket(zmq.DEALER)
        auth("strategy").client(dealer, "executor")
        dealer.connect(endpoint)
        try:
            for p in payloads:
                await dealer.send_multipart([b"", p])
                reply = await asyncio.wait_for(dealer.recv_multipart(), 5)
                assert reply[-1]  # always an answer, never silence
            s = server.stats
            assert s["malformed"] + s["requests"] == len(payloads)
            # (a repeated request id is answered from the reply cache: a duplicate)
            assert s["requests"] == s["unauthorized"] + s["duplicates"] + len(handled)
            assert {name for _, name in handled} <= {"SnapshotQuery", "Ping"}
            assert {sender for sender, _ in handled} <= {"strategy"}
            assert not task.done()
        finally:
            dealer.close(linger=0)
            task.cancel()
            server.close()
            server_auth.close()
            ctx.destroy(0)

    asyncio.run(go())

