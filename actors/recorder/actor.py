"""The recorder actor: every bus message, appended to segment files (DESIGN §6).

The hot loop runs in its own thread on a plain (blocking) SUB socket: poll, then
drain up to a batch with NOBLOCK, append each frame to the writer's buffer, and flush
the buffer to the file every ``flush_interval_ms``. Per message it only decodes the
envelope (a Struct whose body is ``msgspec.Raw``, so the body is never parsed) for
sequence-gap accounting; the payload is stored as received. The asyncio loop of the
runtime keeps heartbeating and obeying ``control`` meanwhile; the thread holds the GIL
only while it works, and the heartbeat reads its counters (plain ints) without locks.

A write error (disk full, I/O error) does not kill the actor: a restart would meet the
same full disk and crash-loop. The recorder cuts the segment back to its last complete
record, closes it, and reports NOT RECORDING (heartbeat info ``recording=false`` with
the reason, FSM ERROR_RETRYABLE) while it keeps draining the bus (each message dropped
is counted), heartbeating and obeying ``control``. Every ``retry_s`` (doubling up to
5 s while it keeps failing) it tries a new segment once the filesystem has room,
and reports RECORDING again when that works. A malformed frame is counted, stored
anyway (it is what was on the bus) when it has the [topic, payload] shape, and never
stops the loop.

Closed segments are handed to a housekeeping thread (housekeeping.py): compression,
retention and the usage figures the heartbeat carries for ``status``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import threading
import time

import msgspec
import zmq
from loguru import logger
from zmq.backend import Socket as _BaseSocket

from actors.recorder.housekeeping import Housekeeper
from actors.runtime import Actor, main_for
from bus.messages import SCHEMA_VERSION, RecorderInfo, envelope_decoder
from bus.transport import SequenceTracker, SubscriberStats
from shared.files import ensure_private_dir
from shared.fsm import State
from shared.recording import SegmentWriter, free_bytes

BATCH = 4096  # frames drained per wake-up before the loop looks at the clock again
# Topic names kept decoded for the sequence tracker; a flood of distinct topics only
# clears the cache (the proxy caps a topic at bus.limits.MAX_TOPIC_BYTES).
MAX_TOPIC_NAMES = 4096
# A retry after a write error waits for at least this much free space: a new segment
# on a disk that is still full would fail at its first flush, over and over.
RESUME_FREE_BYTES = 256 * 1024
# A retry is cheap (a free-space check first), and an operator who frees space expects
# recording to resume at once: the backoff stays short.
MAX_RETRY_S = 5.0


class RecorderActor(Actor):
    name = "recorder"
    subscriptions = ()  # the runtime's subscriber only takes "control"; data has its own

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.stats = SubscriberStats()
        self.tracker = SequenceTracker(self.stats)
        self.malformed = 0
        self.writer: SegmentWriter | None = None
        self.housekeeper: Housekeeper | None = None
        self._halt = threading.Event()
        self._thread_done = threading.Event()
        # Written by the hot loop only; read by the heartbeat and the FSM monitor.
        self.recording = True
        self.not_recording_reason = ""
        self.write_errors = 0
        self.dropped = 0  # messages that arrived while not recording, or lost with a write
        self.disk_warn_bytes = self.cfg.recorder.disk_warn_bytes_value()

    def _header_meta(self) -> dict[str, object]:
        # The parameters strategy and risk ran with, so replay --verify can say when
        # the current config differs from the recorded session's.
        cfg = self.cfg
        return {
            "recorder_incarnation": self.incarnation,
            "mode": cfg.mode,
            "symbols": list(cfg.marketdata.symbols),
            "strategy": msgspec.to_builtins(cfg.strategy),
            "risk": msgspec.to_builtins(cfg.risk),
        }

    async def setup(self) -> None:
        rc = self.cfg.recorder
        directory = self.cfg.path(rc.path)
        ensure_private_dir(directory)
        self.directory = directory
        self.housekeeper = Housekeeper(
            directory, compress=rc.compress, level=rc.compress_level,
            retain_days=rc.retain_days, retain_bytes=rc.retain_bytes_value(),
            interval_s=rc.housekeeping_interval_s,
        )
        self.writer = SegmentWriter(
            directory, schema_version=SCHEMA_VERSION, max_bytes=rc.segment_max_bytes,
            max_s=rc.segment_max_s, meta=self._header_meta(),
            on_closed=self.housekeeper.closed,
        )
        # The first sweep compresses what a previous run could not (a SIGKILL leaves
        # its last segment uncompressed) and measures the directory for status.
        self.housekeeper.start()
        sock = zmq.Context.shadow(self.ctx.underlying).socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self.cfg.bus.hwm)
        sock.setsockopt(zmq.RCVBUF, 4 * 1024 * 1024)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.auth.client(sock, "bus")
        sock.connect(self.cfg.bus_sub_endpoint)
        self.spawn(asyncio.to_thread(self._record_loop, sock), "record")
        self.spawn(self._mirror_health(), "health")
        logger.info("recorder: writing under {}", directory)

    def _record_loop(self, sock: zmq.Socket) -> None:
        try:
            self._drain_until_halted(sock)
        finally:
            sock.close(linger=0)
            self._thread_done.set()

    def _drain_until_halted(self, sock: zmq.Socket) -> None:
        assert self.writer is not None
        writer = self.writer
        append = writer.append
        decode = envelope_decoder.decode
        observe = self.tracker.observe
        # Frame by frame with pyzmq's Cython recv: recv_multipart asks the socket for
        # RCVMORE after every frame (~1 us each, half this loop's cost at 50k msg/s);
        # a Frame says it itself. The payload is used in place (a view of the frame).
        recv = functools.partial(_BaseSocket.recv, sock)
        noblock = zmq.NOBLOCK
        again = zmq.Again
        clock = time.time_ns
        interval_ns = self.cfg.recorder.flush_interval_ms * 1_000_000
        next_flush = clock() + interval_ns
        retry_s = self.cfg.recorder.retry_s
        next_retry = 0
        topics: dict[bytes, str] = {}  # topic -> its name for the tracker (bounded below)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not self._halt.is_set():
            wait_ms = max(0, (next_flush - clock()) // 1_000_000)
            if poller.poll(wait_ms):
                try:
                    for _ in range(BATCH):
                        try:
                            head = recv(noblock, False)
                        except again:
                            break
                        now = clock()
                        if not head.more:
                            self.malformed += 1
                            continue
                        body = recv(0, False)  # a message arrives whole: no wait
                        if body.more:
                            while recv(0, False).more:
                                pass
                            self.malformed += 1
                            continue
                        topic = head.bytes
                        payload = body.buffer
                        name = topics.get(topic)
                        if name is None:
                            if len(topics) >= MAX_TOPIC_NAMES:
                                topics.clear()
                            name = topics[topic] = topic.decode("utf-8", "replace")
                        try:
                            observe(decode(payload).env, name)
                        except (msgspec.DecodeError, msgspec.ValidationError):
                            self.malformed += 1
                        if self.recording:
                            append(now, topic, payload)  # may open a segment
                        else:
                            self.dropped += 1
                except OSError as exc:
                    self.dropped += 1  # the message whose append met the error
                    next_retry = self._write_failed(exc, retry_s)
            now = clock()
            if now >= next_flush:
                next_flush = now + interval_ns
                if self.recording:
                    try:
                        writer.flush(now)
                    except OSError as exc:
                        next_retry = self._write_failed(exc, retry_s)
                    else:
                        retry_s = self.cfg.recorder.retry_s
                elif now >= next_retry:
                    if self._try_resume(now):
                        logger.warning("recorder: RECORDING again in {}", writer.path)
                    else:
                        retry_s = min(retry_s * 2, MAX_RETRY_S)
                        next_retry = now + int(retry_s * 1e9)

    def _write_failed(self, exc: OSError, retry_s: float) -> int:
        """Stop recording, say why, and keep the segment readable (hot loop only)."""
        assert self.writer is not None
        self.write_errors += 1
        self.dropped += self.writer.abandon()
        code = errno.errorcode.get(exc.errno or 0, "error")
        self.not_recording_reason = f"disk: {code} ({exc.strerror or exc}) on {self.directory}"
        if self.recording:
            logger.error("recorder: NOT RECORDING: {}", self.not_recording_reason)
        self.recording = False
        return time.time_ns() + int(retry_s * 1e9)

    def _try_resume(self, now: int) -> bool:
        assert self.writer is not None
        try:
            if free_bytes(self.directory) < RESUME_FREE_BYTES:
                return False
            self.writer.start_segment(now)
        except OSError as exc:
            self.write_errors += 1
            code = errno.errorcode.get(exc.errno or 0, "error")
            self.not_recording_reason = (f"disk: {code} ({exc.strerror or exc}) on "
                                         f"{self.directory}")
            return False
        self.recording = True
        self.not_recording_reason = ""
        return True

    async def _mirror_health(self) -> None:
        """The FSM follows the hot loop's verdict, so ``state.recorder`` and the
        heartbeat's state say NOT RECORDING too (FSM moves belong to this loop)."""
        while True:
            if not self.recording and self.fsm.state == State.READY:
                self.fsm.to(State.ERROR_RETRYABLE,
                            f"NOT RECORDING: {self.not_recording_reason}"[:200])
            elif self.recording and self.fsm.state == State.ERROR_RETRYABLE:
                self.fsm.to(State.READY, "recording again")
            await asyncio.sleep(0.2)

    async def teardown(self) -> None:
        self._halt.set()
        await asyncio.to_thread(self._thread_done.wait, 2.0)
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError as exc:
                self.dropped += self.writer.abandon()
                logger.error("recorder: closing the last segment failed: {}", exc)
            logger.info("recorder: closed after {} records in {} segments",
                        self.writer.records, self.writer.segments)
        if self.housekeeper is not None:
            # The last sweep compresses the segment just closed; the runtime allows
            # teardown 5 s in all. Cut short, it is finished by the next start.
            if not await asyncio.to_thread(self.housekeeper.stop, 2.5):
                logger.warning("recorder: compression at stop unfinished; the next start "
                               "completes it")

    def heartbeat_counters(self) -> dict[str, int]:
        w = self.writer
        hk = self.housekeeper
        u = hk.usage if hk else None
        free = u.free_bytes if u else 0
        return {
            "records": w.records if w else 0,
            "bytes": w.bytes if w else 0,
            "segments": w.segments if w else 0,
            "flush_lag_ms": w.last_flush_lag_ms if w else 0,
            "gaps": self.stats.gaps,
            "lost": self.stats.lost,
            "peer_restarts": self.stats.restarts,
            "malformed": self.malformed,
            "recording": int(self.recording),
            "write_errors": self.write_errors,
            "dropped": self.dropped,
            "compressed": hk.compressed if hk else 0,
            "compress_errors": hk.compress_errors if hk else 0,
            "pruned": hk.pruned if hk else 0,
            "pruned_bytes": hk.pruned_bytes if hk else 0,
            "recordings_bytes": hk.total_bytes if hk else 0,
            "recordings_segments": u.segments if u else 0,
            "oldest_record_ns": u.oldest_ns if u else 0,
            "disk_free_bytes": free,
            "disk_low": int(u is not None and free < self.disk_warn_bytes),
        }

    def heartbeat_info(self) -> RecorderInfo:
        w = self.writer
        hk = self.housekeeper
        u = hk.usage if hk else None
        warning = ""
        if u is not None and u.free_bytes < self.disk_warn_bytes:
            warning = (f"low disk: {u.free_bytes} bytes free on the recordings' filesystem "
                       f"(warning below {self.disk_warn_bytes})")
        return RecorderInfo(
            segment=str(w.path) if w and w.path and w.is_open else "",
            recording=self.recording,
            recording_reason=self.not_recording_reason,
            disk_warning=warning,
            housekeeping_error=hk.last_error if hk else "",
            directory=str(getattr(self, "directory", "")),
        )


def main() -> None:
    main_for(RecorderActor)


if __name__ == "__main__":
    main()
