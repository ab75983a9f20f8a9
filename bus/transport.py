"""ZeroMQ transport: publisher, subscriber, reliable request client and server.

Patterns from the ZeroMQ Guide: PUB/SUB through an XSUB/XPUB proxy for data, and
"Lazy Pirate" REQ/REP for commands (timeout, bounded retries, a fresh socket per
retry, and a request id so the server can answer a retry from its reply cache).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
import zmq.asyncio
from loguru import logger

from bus.auth import BusAuth
from bus.limits import (
    DEFAULT_MAX_FUTURE_SKEW_NS,
    MAX_PAYLOAD_BYTES,
    MAX_TOPIC_BYTES,
    MAX_WIRE_BYTES,
)
from bus.messages import (
    SCHEMA_VERSION,
    BookSnapshot,
    CommandReply,
    CommandRequest,
    Envelope,
    Msg,
    Packet,
    ReplyBody,
    packet_decoder,
    packet_encoder,
    reply_decoder,
    request_decoder,
    topic_for,
)
from bus.roles import command_name, may_call
from shared.clock import Clock, LiveClock


def new_incarnation() -> str:
    """A fresh id for every process start: pid plus randomness."""
    return f"{os.getpid():x}-{uuid.uuid4().hex[:12]}"


class PacketStamper:
    """What every publisher does before sending, whatever carries the frames: the
    envelope (source, incarnation, a sequence per topic, the clock's stamps) and the
    encoding. ``publish_raw`` is the carrier's (ZeroMQ here, simulate/membus.py's
    in-memory bus in the deterministic simulation)."""

    def __init__(self, source: str, incarnation: str, clock: Clock | None = None) -> None:
        self.source = source
        self.incarnation = incarnation
        self.clock: Clock = clock or LiveClock()
        # One sequence per topic: a subscriber sees only the topics it subscribed to, so
        # a per-publisher sequence would show every topic it filtered out as a "gap".
        self._seqs: dict[str, int] = {}

    def envelope(self, topic: str) -> Envelope:
        seq = self._seqs.get(topic, 0) + 1
        self._seqs[topic] = seq
        return Envelope(
            SCHEMA_VERSION, self.source, self.incarnation, seq, self.clock.wall_ns(),
            self.clock.mono_ns(),
        )

    def publish(self, body: Msg, topic: str | None = None) -> None:
        topic = topic or topic_for(body, self.source)
        payload = packet_encoder.encode(Packet(self.envelope(topic), body))
        self.publish_raw(topic.encode(), payload)

    def publish_raw(self, topic: bytes, payload: bytes) -> None:
        raise NotImplementedError


class Publisher(PacketStamper):
    """Publishes ``[topic, Packet]`` frames to the bus proxy's XSUB side.

    A plain (non-asyncio) PUB socket: PUB never blocks (it drops at the high-water
    mark), so sending inline from the event loop is both safe and fastest.
    """

    def __init__(
        self, ctx: zmq.Context, endpoint: str, source: str, incarnation: str, *,
        auth: BusAuth, hwm: int = 100_000, clock: Clock | None = None,
    ) -> None:
        super().__init__(source, incarnation, clock)
        # Owned by ``ctx`` (so ctx.destroy() closes it), sent through a plain shadow:
        # an asyncio socket's send would cost a future per message for nothing.
        self._owner = ctx.socket(zmq.PUB)
        self._sock = zmq.Socket.shadow(self._owner.underlying)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 200)
        auth.client(self._sock, "bus")
        self._sock.connect(endpoint)

    def publish_raw(self, topic: bytes, payload: bytes) -> None:
        """Send an encoded payload (replay forwards recorded ones with this)."""
        # Two copying sends make the same two-frame message as send_multipart, ~3x
        # faster for our small frames (zero-copy only pays off above ~10 kB).
        self._sock.send(topic, zmq.SNDMORE)
        self._sock.send(payload)

    def close(self) -> None:
        self._owner.close()


@dataclass
class StreamState:
    incarnation: str
    last_seq: int


@dataclass
class SubscriberStats:
    received: int = 0
    malformed: int = 0
    gaps: int = 0  # number of gap events
    lost: int = 0  # messages missing inside gaps
    restarts: int = 0  # incarnation changes seen
    oversize: int = 0  # frames over bus.limits (also counted as malformed)
    future_stamps: int = 0  # stamps beyond the allowed skew (also counted as malformed)
    malformed_kinds: set[str] = field(default_factory=set)

    def as_counters(self, prefix: str = "bus_") -> dict[str, int]:
        return {
            f"{prefix}received": self.received,
            f"{prefix}malformed": self.malformed,
            f"{prefix}gaps": self.gaps,
            f"{prefix}lost": self.lost,
            f"{prefix}peer_restarts": self.restarts,
            f"{prefix}oversize": self.oversize,
            f"{prefix}future_stamps": self.future_stamps,
        }


class SequenceTracker:
    """Gap and restart detection from (source, topic, incarnation, seq): a publisher
    numbers each topic on its own (see ``Publisher.envelope``)."""

    def __init__(self, stats: SubscriberStats) -> None:
        self.stats = stats
        self.streams: dict[tuple[str, str], StreamState] = {}

    def observe(self, env: Envelope, topic: str) -> int:
        """Returns how many messages were skipped before this one (0 = in order)."""
        key = (env.source, topic)
        state = self.streams.get(key)
        if state is None:
            self.streams[key] = StreamState(env.incarnation, env.seq)
            return 0
        if state.incarnation != env.incarnation:
            self.stats.restarts += 1
            state.incarnation, state.last_seq = env.incarnation, env.seq
            return 0
        missing = env.seq - state.last_seq - 1
        if env.seq > state.last_seq:
            state.last_seq = env.seq
        if missing > 0:
            self.stats.gaps += 1
            self.stats.lost += missing
            return missing
        return 0


class PacketInbox:
    """What every subscriber does with the frames it receives, whatever carries them:
    strict typed decoding, size and future-stamp limits, gap and restart detection.
    Undecodable frames are counted, logged once per kind, and dropped."""

    def __init__(self, *, name: str = "", max_future_skew_ns: int = DEFAULT_MAX_FUTURE_SKEW_NS,
                 clock: Clock | None = None) -> None:
        self.name = name
        self.max_future_skew_ns = max_future_skew_ns
        self.clock: Clock = clock or LiveClock()
        self.stats = SubscriberStats()
        self.tracker = SequenceTracker(self.stats)

    def decode(self, frames: list[bytes]) -> tuple[str, Packet] | None:
        if len(frames) != 2:
            self._malformed("frame_count", f"{len(frames)} frames")
            return None
        if len(frames[0]) > MAX_TOPIC_BYTES or len(frames[1]) > MAX_PAYLOAD_BYTES:
            self.stats.oversize += 1
            self._malformed("oversize", f"topic {len(frames[0])} B, payload {len(frames[1])} B")
            return None
        try:
            topic = frames[0].decode()
            packet = packet_decoder.decode(frames[1])
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            self._malformed(type(exc).__name__, str(exc))
            return None
        stamp = _latest_stamp_ns(packet)
        limit = self.clock.wall_ns() + self.max_future_skew_ns
        if stamp > limit:
            # A stamp from the future would look fresh for as long as it stays ahead (and
            # move a message clock forward): refused, counted.
            self.stats.future_stamps += 1
            self._malformed("future_stamp", f"{topic}: {(stamp - limit) / 1e9:.3f}s past skew")
            return None
        self.stats.received += 1
        self.tracker.observe(packet.env, topic)
        return topic, packet

    def _malformed(self, kind: str, detail: str) -> None:
        self.stats.malformed += 1
        if kind not in self.stats.malformed_kinds:
            self.stats.malformed_kinds.add(kind)
            logger.warning("bus: dropped malformed frame ({}): {}", kind, detail[:200])


class Subscriber(PacketInbox):
    """Typed subscriber on the proxy's XPUB side (``PacketInbox`` decodes)."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        topics: list[str],
        *,
        auth: BusAuth,
        hwm: int = 100_000,
        name: str = "",
        reconnect_ivl_ms: int = 100,
        max_future_skew_ns: int = DEFAULT_MAX_FUTURE_SKEW_NS,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name=name, max_future_skew_ns=max_future_skew_ns, clock=clock)
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        auth.client(self._sock, "bus")
        self._sock.connect(endpoint)

    def subscribe(self, topic: str) -> None:
        self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())

    async def recv_raw(self) -> list[bytes]:
        return await self._sock.recv_multipart()

    async def recv(self) -> tuple[str, Packet]:
        """Next well-formed message; malformed ones are counted and skipped."""
        while True:
            frames = await self._sock.recv_multipart()
            decoded = self.decode(frames)
            if decoded is not None:
                return decoded

    def close(self) -> None:
        self._sock.close()


def _latest_stamp_ns(packet: Packet) -> int:
    """The latest wall-clock stamp a packet claims: its envelope's, or a book's receive
    time (what freshness is judged by downstream)."""
    body = packet.body
    if isinstance(body, BookSnapshot):
        return max(packet.env.wall_ns, body.recv_wall_ns)
    return packet.env.wall_ns


class RequestFailed(Exception):
    """A command could not be delivered or was refused; never a hang."""


class RequestClient:
    """Lazy Pirate client: a REQ socket, timeout, bounded retries with a fresh
    socket, the same request id on every retry. ``server`` names the identity serving
    ``endpoint`` (its roster key authenticates it); we call it as ``auth.identity``."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        auth: BusAuth,
        *,
        server: str,
        timeout_s: float = 2.0,
        retries: int = 3,
    ) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.auth = auth
        self.server = server
        self.sender = auth.identity
        self.timeout_s = timeout_s
        self.retries = retries
        self._sock: zmq.asyncio.Socket | None = None
        self._lock = asyncio.Lock()
        self.stats = {"requests": 0, "retries": 0, "failures": 0}

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            sock = self.ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            self.auth.client(sock, self.server)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _discard_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def request(
        self, body: Msg, *, request_id: str | None = None, timeout_s: float | None = None,
        retries: int | None = None, after_send: Callable[[], None] | None = None,
    ) -> ReplyBody | None:
        """Send ``body``; return the reply body, or raise RequestFailed.
        ``after_send`` runs once, as soon as the first attempt is handed to ZeroMQ: for
        work that should not delay the request (announcing it, say)."""
        request_id = request_id or uuid.uuid4().hex
        payload = packet_encoder.encode(CommandRequest(request_id, self.sender, body))
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.retries if retries is None else retries)
        async with self._lock:
            self.stats["requests"] += 1
            for attempt in range(attempts):
                if attempt:
                    self.stats["retries"] += 1
                sock = self._socket()
                # A receive timeout instead of poll() + recv(): one future per reply
                # instead of a Poller, a watcher and two futures (~40 µs less a request).
                sock.rcvtimeo = int(timeout * 1000)
                try:
                    await sock.send(payload)
                    if after_send is not None:
                        after_send()
                        after_send = None
                    raw = await sock.recv()
                except zmq.Again:
                    # No answer: a REQ socket is now stuck mid-exchange, so drop it.
                    self._discard_socket()
                    continue
                except BaseException:
                    # Cancelled (or worse) mid-exchange: the REQ socket would refuse
                    # every later send, so it goes too.
                    self._discard_socket()
                    raise
                reply = self._decode_reply(raw, request_id)
                if reply is None:
                    continue  # stale or garbage reply: the socket was discarded
                if not reply.ok:
                    raise RequestFailed(reply.error)
                return reply.body
            self.stats["failures"] += 1
            raise RequestFailed(
                f"no reply from {self.endpoint} after {attempts} attempts of {timeout:.1f}s"
            )

    def _decode_reply(self, raw: bytes, request_id: str) -> CommandReply | None:
        try:
            reply = reply_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.warning("bus: malformed reply from {}: {}", self.endpoint, exc)
            self._discard_socket()
            return None
        if reply.request_id != request_id:
            self._discard_socket()
            return None
        return reply

    def close(self) -> None:
        self._discard_socket()


Handler = Callable[[CommandRequest[Any]], Awaitable[Msg | None]]


class CommandError(Exception):
    """Raised by a handler to refuse a command with a message for the caller."""


class CommandAnswerer:
    """What every command server does with a request, whatever carries it: the size
    limit, strict decoding against the channel's command union, the roles check (only
    commands ``bus.roles.COMMANDS`` grants the authenticated caller on this server reach
    the handler; the rest are refused with the reason and counted ``unauthorized``), the
    handler, and a reply cache by (caller, request id) (bounded LRU), so a Lazy Pirate
    retry of a command that was already executed gets the same answer without running
    the handler again; a retry that arrives while the first is still running waits for
    that same result."""

    def __init__(self, handler: Handler, name: str, *, commands: Any,
                 cache_size: int = 10_000) -> None:
        """``commands`` is the channel's union of command types (``ExecutorCommand``…):
        a request with any other body is refused as malformed before the handler.
        ``name`` is the server's name in the roles table."""
        self.handler = handler
        self.name = name
        self._decoder = request_decoder(commands)
        self.cache_size = cache_size
        self._replies: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self.stats = {"requests": 0, "duplicates": 0, "malformed": 0, "oversize": 0,
                      "errors": 0, "unauthorized": 0}

    async def answer(self, payload: bytes, caller: str) -> bytes:
        """The encoded ``CommandReply`` to one encoded request from ``caller`` (the
        authenticated identity, whatever the request claims)."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            self.stats["malformed"] += 1
            self.stats["oversize"] += 1
            return packet_encoder.encode(
                CommandReply("", False, f"refused: request of {len(payload)} bytes"))
        try:
            request = self._decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats["malformed"] += 1
            n = self.stats["malformed"]
            if n & (n - 1) == 0:  # the 1st, 2nd, 4th…: a flood cannot fill the disk
                logger.warning("bus: malformed command dropped ({} so far): {}", n, exc)
            # Answer with the request's id when it has one, so the caller gets the
            # refusal at once instead of retrying into the same wall.
            return packet_encoder.encode(
                CommandReply(_request_id_of(payload), False, f"refused: {exc}"))
        self.stats["requests"] += 1
        command = command_name(request.body)
        if not may_call(self.name, caller, command):
            self.stats["unauthorized"] += 1
            n = self.stats["unauthorized"]
            if n & (n - 1) == 0:
                logger.warning("bus: refused {} from {!r} on {} (roles; {} so far)", command,
                               caller, self.name, n)
            return packet_encoder.encode(CommandReply(
                request.request_id, False,
                f"refused: {caller or 'an unauthenticated caller'} may not send {command} "
                f"to {self.name} (btcbot-supervisor roles)"))
        request = msgspec.structs.replace(request, sender=caller)
        rid = (caller, request.request_id)
        if rid in self._replies:
            self.stats["duplicates"] += 1
            return self._replies[rid]
        if rid in self._inflight:
            self.stats["duplicates"] += 1
            return await asyncio.shield(self._inflight[rid])
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[rid] = future
        try:
            reply = await self._run_handler(request)
            future.set_result(reply)
            self._remember(rid, reply)
        finally:
            del self._inflight[rid]
        return reply

    async def _run_handler(self, request: CommandRequest[Any]) -> bytes:
        try:
            body = await self.handler(request)
            reply = CommandReply(request.request_id, True, "", body)
        except CommandError as exc:
            reply = CommandReply(request.request_id, False, str(exc))
        except Exception as exc:  # a handler bug must not kill the server loop
            self.stats["errors"] += 1
            logger.exception("command handler failed on {}", type(request.body).__name__)
            reply = CommandReply(request.request_id, False, f"internal error: {exc!r}")
        return packet_encoder.encode(reply)

    def _remember(self, rid: tuple[str, str], reply: bytes) -> None:
        self._replies[rid] = reply
        if len(self._replies) > self.cache_size:
            self._replies.popitem(last=False)


class RequestServer(CommandAnswerer):
    """ROUTER server answering ``CommandRequest``s with ``CommandReply``s.

    Every caller is authenticated (CURVE, ``bus/auth.py``): the handler sees the
    caller's identity as ``request.sender``, whatever the request claimed
    (``CommandAnswerer`` decides the answer)."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        handler: Handler,
        *,
        commands: Any,
        auth: BusAuth,
        cache_size: int = 10_000,
    ) -> None:
        """The server's name in the roles table is ``auth.identity``."""
        super().__init__(handler, auth.identity, commands=commands, cache_size=cache_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
        auth.server(self._sock)
        if endpoint.startswith("ipc://"):
            _unlink_stale_ipc(endpoint)
        self._sock.bind(endpoint)

    async def serve(self) -> None:
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            if len(frames) < 3:
                self.stats["malformed"] += 1
                continue
            identity, payload = frames[0].bytes, frames[-1].bytes
            # Set by our ZAP handler for every message of an authenticated connection.
            caller = _user_id(frames[-1])
            task = asyncio.create_task(self._handle(identity, payload, caller))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, identity: bytes, payload: bytes, caller: str) -> None:
        await self._send(identity, await self.answer(payload, caller))

    async def _send(self, identity: bytes, reply: bytes) -> None:
        await self._sock.send_multipart([identity, b"", reply])

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._sock.close()


_loose_request_decoder = msgspec.msgpack.Decoder(CommandRequest[msgspec.Raw])


def _request_id_of(payload: bytes) -> str:
    try:
        return _loose_request_decoder.decode(payload).request_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


def _user_id(frame: zmq.Frame) -> str:
    try:
        return frame.get("User-Id")  # type: ignore[no-any-return]
    except zmq.ZMQError:  # no metadata: not an authenticated connection
        return ""


def _unlink_stale_ipc(endpoint: str) -> None:
    """A SIGKILLed server leaves its socket file; binding over it is safe because
    the caller holds the actor's single-instance guarantee (the supervisor)."""
    path = endpoint.removeprefix("ipc://")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
