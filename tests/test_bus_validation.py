"""Values validated at the edge (issue 16): bounded frames and fields, finite positive
money, no stamps from the future. Random frames into the Subscriber, the RequestServer
and the proxy are refused and counted, never a crash."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.limits import MAX_PAYLOAD_BYTES, MAX_TOPIC_BYTES
from bus.messages import (
    BookSnapshot,
    CommandRequest,
    Envelope,
    ExecutorCommand,
    FeedStatus,
    Intent,
    OrderRequest,
    Packet,
    Ping,
    PingCommand,
    SubmitOrder,
    packet_decoder,
    packet_encoder,
    request_decoder,
)
from bus.proxy import BURST, FrameProxy, check_shape
from bus.transport import RequestClient, RequestFailed, RequestServer, Subscriber
from tests.keys import auth


def env(wall_ns: int | None = None, seq: int = 1) -> Envelope:
    return Envelope(1, "t", "i1", seq, time.time_ns() if wall_ns is None else wall_ns,
                    time.monotonic_ns())


def book_dict(**over: object) -> list[object]:
    body = BookSnapshot(symbol="BTCTRY", bids=[(Decimal("100"), Decimal("1"))],
                        asks=[(Decimal("101"), Decimal("1"))], source="ws", exchange_ts_ms=1,
                        recv_wall_ns=time.time_ns(), recv_mono_ns=1, age_ms=1)
    raw = msgspec.to_builtins(Packet(env(), body))
    raw[1].update(over)
    return raw


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "-1", "0", "sNaN"])
def test_non_finite_or_non_positive_prices_are_refused(bad: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        packet_decoder.decode(msgspec.msgpack.encode(book_dict(bids=[[bad, "1"]])))


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "-1", "sNaN"])
def test_non_finite_or_negative_amounts_are_refused_naming_the_side(bad: str) -> None:
    # A bad level deep in the book, behind good ones (the fast path checks all of them).
    asks = [["101", "1"], ["102", "0"], ["103", bad]]
    with pytest.raises(msgspec.ValidationError, match="asks amount"):
        packet_decoder.decode(msgspec.msgpack.encode(book_dict(asks=asks)))


def test_a_zero_amount_level_is_accepted() -> None:
    packet = packet_decoder.decode(msgspec.msgpack.encode(book_dict(asks=[["101", "0"]])))
    assert packet.body.asks == [(Decimal("101"), Decimal("0"))]


@pytest.mark.parametrize("field", ["price", "quantity"])
@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-5"])
def test_an_order_with_bad_money_is_refused_by_the_executor_channel(field: str,
                                                                    bad: str) -> None:
    order = OrderRequest(intent_id="i", client_order_id="c", symbol="BTCTRY", side="buy",
                         order_type="limit", price=Decimal(100), quantity=Decimal(1),
                         ttl_s=5.0, reason="r")
    raw = msgspec.to_builtins(CommandRequest("r1", "risk", SubmitOrder(order=order)))
    raw[2]["order"][field] = bad
    with pytest.raises(msgspec.ValidationError, match=field):
        request_decoder(ExecutorCommand).decode(msgspec.msgpack.encode(raw))


def test_a_nan_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        Intent(intent_id="x", symbol="S", side="buy", order_type="limit", price=Decimal(1),
               quantity=Decimal(1), reason="", ttl_s=float("nan"), strategy="s",
               created_wall_ns=0)


def test_strings_and_lists_are_bounded() -> None:
    with pytest.raises(msgspec.ValidationError, match="length"):
        packet_decoder.decode(msgspec.msgpack.encode(book_dict(symbol="X" * 257)))
    with pytest.raises(msgspec.ValidationError, match="length"):
        packet_decoder.decode(msgspec.msgpack.encode(
            book_dict(bids=[["1", "1"]] * 1001)))


def _subscriber(tmp_path: Path) -> tuple[zmq.asyncio.Context, Subscriber]:
    ctx = zmq.asyncio.Context()
    return ctx, Subscriber(ctx, f"ipc://{tmp_path}/s", [""], auth=auth("supervisor"))


def test_subscriber_refuses_a_65536_byte_topic_and_future_stamps(tmp_path: Path) -> None:
    ctx, sub = _subscriber(tmp_path)
    try:
        good = packet_encoder.encode(Packet(env(), FeedStatus(symbol="S", fresh=True,
                                                              source="ws", age_ms=1)))
        assert sub.decode([b"x" * 65_536, good]) is None
        assert sub.stats.oversize == 1
        assert sub.decode([b"md.status", b"\x00" * (MAX_PAYLOAD_BYTES + 1)]) is None
        assert sub.stats.oversize == 2
        ahead = packet_encoder.encode(Packet(env(time.time_ns() + 120 * 10**9), FeedStatus(
            symbol="S", fresh=True, source="ws", age_ms=1)))
        assert sub.decode([b"md.status", ahead]) is None
        assert sub.stats.future_stamps == 1
        # A forged book whose own receive stamp is from the future: same refusal.
        raw = book_dict(recv_wall_ns=time.time_ns() + 60 * 10**9)
        assert sub.decode([b"md.book.BTCTRY", msgspec.msgpack.encode(raw)]) is None
        assert sub.stats.future_stamps == 2
        # Within the skew (a second ahead: clocks of two hosts) is accepted.
        near = packet_encoder.encode(Packet(env(time.time_ns() + 10**9), FeedStatus(
            symbol="S", fresh=True, source="ws", age_ms=1)))
        assert sub.decode([b"md.status", near]) is not None
        assert sub.decode([b"md.status", good]) is not None
        assert sub.stats.received == 2 and sub.stats.malformed == 4
        assert sub.stats.as_counters()["bus_future_stamps"] == 2
    finally:
        sub.close()
        ctx.destroy()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_random_frames_into_a_subscriber_are_refused_and_counted(tmp_path: Path,
                                                                 frames: list[bytes]) -> None:
    ctx, sub = _subscriber(tmp_path)
    try:
        out = sub.decode(frames)
        # Random bytes are (almost) never a valid packet; whatever happens, exactly one
        # of the two counters moved and nothing raised.
        assert (out is None) == (sub.stats.malformed == 1)
        assert sub.stats.received + sub.stats.malformed == 1
    finally:
        sub.close()
        ctx.destroy()


@given(topic=st.binary(max_size=300), rest=st.lists(st.binary(max_size=50), max_size=3))
def test_proxy_shape_check_is_total(topic: bytes, rest: list[bytes]) -> None:
    reason = check_shape([topic, *rest])
    if len(rest) != 1:
        assert reason == "frame_count"
    elif len(topic) > MAX_TOPIC_BYTES:
        assert reason == "oversize_topic"
    else:
        assert reason is None


def test_proxy_drops_and_counts_oversize_and_misshapen_frames(tmp_path: Path) -> None:
    """Real sockets: a 65,536-byte topic and a three-frame message never reach a
    subscriber; the good frame after them does."""
    ctx = zmq.Context()
    bus_auth = auth("bus")
    proxy = FrameProxy(ctx, f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/out", hwm=100_000,
                       auth=bus_auth)
    proxy.start()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    auth("supervisor").client(sub, "bus")
    sub.connect(f"ipc://{tmp_path}/out")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    auth("marketdata").client(pub, "bus")
    pub.connect(f"ipc://{tmp_path}/in")
    try:
        time.sleep(0.3)  # subscriptions travel to the publisher
        pub.send_multipart([b"x" * 65_536, b"payload"])
        pub.send_multipart([b"md.status", b"a", b"b"])
        # The loop reads frame by frame: a message of one frame or of many is consumed
        # whole, so the frames of the next message are never taken for its tail.
        pub.send(b"md.status")
        pub.send_multipart([b"md.status", *(b"x%d" % i for i in range(7))])
        pub.send_multipart([b"md.status", b"ok"])
        assert sub.poll(5000)
        assert sub.recv_multipart() == [b"md.status", b"ok"]
        assert not sub.poll(200)
        assert proxy.counters["proxy_dropped_oversize_topic"] == 1
        assert proxy.counters["proxy_dropped_frame_count"] == 3
        assert proxy.counters["proxy_forwarded"] == 1
        # More than one wake-up's worth (BURST) in one go: all forwarded, in order.
        n = BURST * 3 + 7
        for i in range(n):
            pub.send_multipart([b"md.status", b"%d" % i])
        got = []
        while len(got) < n and sub.poll(5000):
            got.append(int(sub.recv_multipart()[1]))
        assert got == list(range(n))
        assert proxy.counters["proxy_forwarded"] == 1 + n
    finally:
        proxy.stop()
        for s in (sub, pub):
            s.close(linger=0)
        proxy.close()
        bus_auth.close()
        ctx.term()


def test_request_server_survives_random_payloads(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/cmd"
    calls: list[str] = []

    async def handler(req: CommandRequest[PingCommand]) -> None:
        calls.append(req.request_id)

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        server_auth = auth("marketdata")
        server = RequestServer(ctx, endpoint, handler, commands=PingCommand, auth=server_auth)
        task = asyncio.create_task(server.serve())
        raw = ctx.socket(zmq.DEALER)
        auth("operator").client(raw, "marketdata")
        raw.connect(endpoint)
        garbage = [b"", b"\xc1", b"\x93\x01\x02\x03", b"x" * (MAX_PAYLOAD_BYTES + 1),
                   msgspec.msgpack.encode(["r", "s", {"type": "SubmitOrder"}])]
        for g in garbage:
            await raw.send_multipart([b"", g])
            reply = await asyncio.wait_for(raw.recv_multipart(), 5)
            assert b"refused" in reply[-1]
        client = RequestClient(ctx, endpoint, auth("operator"), server="marketdata",
                               timeout_s=5, retries=0)
        assert await client.request(Ping()) is None  # still serving
        with pytest.raises(RequestFailed, match="refused"):
            await client.request(FeedStatus(symbol="S", fresh=True, source="ws",
                                            age_ms=1))  # type: ignore[arg-type]
        assert server.stats["malformed"] == len(garbage) + 1
        assert server.stats["oversize"] == 1
        assert calls and len(calls) == 1
        client.close()
        raw.close(linger=0)
        task.cancel()
        server.close()
        server_auth.close()
        ctx.destroy()

    asyncio.run(go())
