"""Bus transport: codec round trips, gap detection, Lazy Pirate against a dead and
then revived server, idempotent answers to retries."""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio
from hypothesis import given
from hypothesis import strategies as st

from bus.messages import (
    ALL_BODY_TYPES,
    Ack,
    CommandRequest,
    Envelope,
    FeedStatus,
    Heartbeat,
    Intent,
    Packet,
    Ping,
    PingCommand,
    packet_decoder,
    packet_encoder,
)
from bus.transport import (
    CommandError,
    RequestClient,
    RequestFailed,
    RequestServer,
    SequenceTracker,
    Subscriber,
    SubscriberStats,
)
from tests.keys import auth

decimals = st.decimals(allow_nan=False, allow_infinity=False, places=8,
                       min_value=Decimal("-1e12"), max_value=Decimal("1e12"))


def env(seq: int = 1, source: str = "t", inc: str = "i1") -> Envelope:
    return Envelope(1, source, inc, seq, time.time_ns(), time.monotonic_ns())


@given(price=decimals.map(abs), qty=decimals.map(abs).filter(bool), ttl=st.floats(0, 1e6),
       reason=st.text(max_size=30))
def test_intent_round_trip_keeps_decimals_exact(price, qty, ttl, reason) -> None:
    body = Intent(intent_id="x", symbol="BTCTRY", side="buy", order_type="limit", price=price,
                  quantity=qty, reason=reason, ttl_s=ttl, strategy="s", created_wall_ns=1)
    out = packet_decoder.decode(packet_encoder.encode(Packet(env(), body))).body
    assert out == body
    assert isinstance(out.price, Decimal) and out.price == price


def test_every_body_type_has_a_unique_tag() -> None:
    tags = [msgspec.inspect.type_info(t).tag for t in ALL_BODY_TYPES]
    assert len(tags) == len(set(tags))


def test_strict_decode_rejects_float_money_and_unknown_tags() -> None:
    good = msgspec.to_builtins(Packet(env(), Heartbeat(
        actor="a", pid=1, state="READY", ready=True, uptime_s=1.0, counters={})))
    bad_tag = [good[0], {**good[1], "type": "Nope"}]
    with pytest.raises(msgspec.ValidationError):
        packet_decoder.decode(msgspec.msgpack.encode(bad_tag))
    wrong = [good[0], {**good[1], "pid": "one"}]
    with pytest.raises(msgspec.ValidationError):
        packet_decoder.decode(msgspec.msgpack.encode(wrong))


@given(st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_gap_detection_counts_exactly_the_missing(seqs: list[int]) -> None:
    seqs = sorted(set(seqs))
    stats = SubscriberStats()
    tracker = SequenceTracker(stats)
    for s in seqs:
        tracker.observe(env(s), "t")
    expected_lost = (seqs[-1] - seqs[0] + 1) - len(seqs)
    assert stats.lost == expected_lost
    assert stats.restarts == 0


def test_restart_is_not_a_gap() -> None:
    stats = SubscriberStats()
    tracker = SequenceTracker(stats)
    for s in (1, 2, 3):
        tracker.observe(env(s, inc="a"), "t")
    tracker.observe(env(1, inc="b"), "t")
    assert stats.restarts == 1 and stats.gaps == 0


def test_subscriber_counts_and_drops_malformed(tmp_path: Path) -> None:
    async def go() -> SubscriberStats:
        ctx = zmq.asyncio.Context()
        sub = Subscriber(ctx, f"ipc://{tmp_path}/s", [""], auth=auth("supervisor"))
        frames_in = [[b"t", b"junk"], [b"t"], [b"t", packet_encoder.encode(Packet(env(), FeedStatus(
            symbol="BTCTRY", fresh=True, source="ws", age_ms=1)))]]
        results = [sub.decode(f) for f in frames_in]
        sub.close()
        ctx.destroy()
        assert results[0] is None and results[1] is None and results[2] is not None
        return sub.stats

    stats = asyncio.run(go())
    assert stats.malformed == 2 and stats.received == 1


@contextlib.asynccontextmanager
async def serving(endpoint: str, calls: list[str], delay: float = 0.0):
    """A ping-only RequestServer running in the background; stopped on exit."""

    async def handler(req: CommandRequest):
        calls.append(req.request_id)
        if delay:
            await asyncio.sleep(delay)
        if isinstance(req.body, Ping):
            return Ack(detail=f"pong {len(calls)}")
        raise CommandError("only ping")

    ctx = zmq.asyncio.Context()
    server_auth = auth("marketdata")
    server = RequestServer(ctx, endpoint, handler, commands=PingCommand, auth=server_auth)
    task = asyncio.create_task(server.serve())
    try:
        yield server
    finally:
        task.cancel()
        server.close()
        server_auth.close()
        ctx.destroy()


@contextlib.contextmanager
def client_for(endpoint: str, **kw):
    """A RequestClient on its own context; closed on exit."""
    ctx = zmq.asyncio.Context()
    client = RequestClient(ctx, endpoint, auth("operator"), server="marketdata", **kw)
    try:
        yield client
    finally:
        client.close()
        ctx.destroy()


def test_lazy_pirate_dead_then_revived_server(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/cmd"

    async def go() -> None:
        with client_for(endpoint, timeout_s=0.2, retries=2) as client:
            t0 = time.monotonic()
            with pytest.raises(RequestFailed, match="no reply"):
                await client.request(Ping())
            assert time.monotonic() - t0 < 2.0, "a dead server must not hang the caller"
            assert client.stats["retries"] == 2

            async with serving(endpoint, []):
                reply = await client.request(Ping())
                assert isinstance(reply, Ack)
                # A body of another channel is refused by the decoder, with the reason.
                with pytest.raises(RequestFailed, match="refused: Invalid value 'Intent'"):
                    await client.request(Intent(
                        intent_id="x", symbol="S", side="buy", order_type="limit",
                        price=Decimal(1), quantity=Decimal(1), reason="", ttl_s=1,
                        strategy="s", created_wall_ns=0))

    asyncio.run(go())


def test_retry_with_same_request_id_is_answered_from_cache(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/cmd"

    async def go() -> None:
        calls: list[str] = []
        # timeout shorter than the handler: the first attempt times out, the retry
        # (same id, fresh socket) must get the one result without a second execution
        async with serving(endpoint, calls, delay=0.3) as server:
            with client_for(endpoint, timeout_s=0.2, retries=3) as client:
                reply = await client.request(Ping(), request_id="fixed-id")
                assert isinstance(reply, Ack) and reply.detail == "pong 1"
                again = await client.request(Ping(), request_id="fixed-id")
                assert again == reply
                assert calls == ["fixed-id"], "the handler ran more than once for one id"
                assert server.stats["duplicates"] >= 1

    asyncio.run(go())


def test_cancelled_request_does_not_poison_the_client(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/cmd"

    async def go() -> None:
        async with serving(endpoint, [], delay=0.5):
            with client_for(endpoint, timeout_s=2.0, retries=0) as client:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(client.request(Ping()), timeout=0.1)
                reply = await client.request(Ping())  # a fresh socket, not a stuck REQ
                assert isinstance(reply, Ack)

    asyncio.run(go())


def test_after_send_runs_once_before_the_reply_even_across_retries(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/cmd"

    async def go() -> None:
        calls: list[str] = []
        seen: list[int] = []  # handler calls made when after_send ran
        async with serving(endpoint, calls, delay=0.3):
            # The first attempt times out and is retried: after_send must not repeat.
            with client_for(endpoint, timeout_s=0.2, retries=3) as client:
                reply = await client.request(Ping(), after_send=lambda: seen.append(len(calls)))
                assert isinstance(reply, Ack)
                assert client.stats["retries"] >= 1
        assert seen == [0], "after_send ran late or more than once"

    asyncio.run(go())


def test_sequences_are_per_topic_so_a_filtering_subscriber_sees_no_gap() -> None:
    """A publisher numbers each topic on its own: a subscriber of md.book.* only must not
    count the md.status or hb messages it never asked for as lost (the reconciler used to
    reconcile every second on such "gaps")."""
    import zmq as _zmq

    from bus.transport import Publisher, SequenceTracker, SubscriberStats

    ctx = _zmq.Context()
    try:
        pub = Publisher(ctx, "inproc://seq-test", "marketdata", "inc", auth=auth("marketdata"))
        envs = [(t, pub.envelope(t)) for t in
                ["md.book.A", "md.status", "hb.marketdata", "md.book.A", "md.book.A"]]
        stats = SubscriberStats()
        tracker = SequenceTracker(stats)
        for topic, env in envs:
            if topic.startswith("md.book"):
                assert tracker.observe(env, topic) == 0
        assert (stats.gaps, stats.lost) == (0, 0)
        # a real loss on the subscribed topic is still counted
        pub.envelope("md.book.A")
        assert tracker.observe(pub.envelope("md.book.A"), "md.book.A") == 1
        assert (stats.gaps, stats.lost) == (1, 1)
        pub.close()
    finally:
        ctx.term()
