"""The recorder actor: every bus message, appended to segment files (DESIGN §6).

The hot loop runs in its own thread on a plain (blocking) SUB socket: poll, then
drain up to a batch with NOBLOCK, append each frame to the writer's buffer, and flush
the buffer to the file every ``flush_interval_ms``. Per message it only decodes the
envelope (a Struct whose body is ``msgspec.Raw``, so the body is never parsed) for
sequence-gap accounting; the payload is stored as received. The asyncio loop of the
runtime keeps heartbeating and obeying ``control`` meanwhile; the thread holds the GIL
only while it works, and the heartbeat reads its counters (plain ints) without locks.

A dying hot loop (disk full, I/O error) kills the actor loudly (exit 1), so the
supervisor restarts it; a malformed frame is counted, stored anyway (it is what was on
the bus) when it has the [topic, payload] shape, and never stops the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec
import zmq
from loguru import logger

from actors.runtime import Actor, main_for
from bus.messages import SCHEMA_VERSION, RecorderInfo, envelope_decoder
from bus.transport import SequenceTracker, SubscriberStats
from shared.recording import SegmentWriter, ensure_private_dir

BATCH = 4096  # frames drained per wake-up before the loop looks at the clock again


class RecorderActor(Actor):
    name = "recorder"
    subscriptions = ()  # the runtime's subscriber only takes "control"; data has its own

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.stats = SubscriberStats()
        self.tracker = SequenceTracker(self.stats)
        self.malformed = 0
        self.writer: SegmentWriter | None = None
        self._halt = threading.Event()
        self._thread_done = threading.Event()

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
        self.writer = SegmentWriter(
            directory, schema_version=SCHEMA_VERSION, max_bytes=rc.segment_max_bytes,
            max_s=rc.segment_max_s, meta=self._header_meta(),
        )
        sock = zmq.Context.shadow(self.ctx.underlying).socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self.cfg.bus.hwm)
        sock.setsockopt(zmq.RCVBUF, 4 * 1024 * 1024)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.cfg.bus_sub_endpoint)
        self.spawn(asyncio.to_thread(self._record_loop, sock), "record")
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
        recv = sock.recv_multipart
        noblock = zmq.NOBLOCK
        again = zmq.Again
        clock = time.time_ns
        interval_ns = self.cfg.recorder.flush_interval_ms * 1_000_000
        next_flush = clock() + interval_ns
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not self._halt.is_set():
            wait_ms = max(0, (next_flush - clock()) // 1_000_000)
            if poller.poll(wait_ms):
                for _ in range(BATCH):
                    try:
                        frames = recv(noblock)
                    except again:
                        break
                    now = clock()
                    if len(frames) != 2:
                        self.malformed += 1
                        continue
                    try:
                        observe(decode(frames[1]).env)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        self.malformed += 1
                    append(now, frames[0], frames[1])
            now = clock()
            if now >= next_flush:
                writer.flush(now)
                next_flush = now + interval_ns

    async def teardown(self) -> None:
        self._halt.set()
        await asyncio.to_thread(self._thread_done.wait, 5.0)
        if self.writer is not None:
            self.writer.close()
            logger.info("recorder: closed after {} records in {} segments",
                        self.writer.records, self.writer.segments)

    def heartbeat_counters(self) -> dict[str, int]:
        w = self.writer
        return {
            "records": w.records if w else 0,
            "bytes": w.bytes if w else 0,
            "segments": w.segments if w else 0,
            "flush_lag_ms": w.last_flush_lag_ms if w else 0,
            "gaps": self.stats.gaps,
            "lost": self.stats.lost,
            "peer_restarts": self.stats.restarts,
            "malformed": self.malformed,
        }

    def heartbeat_info(self) -> RecorderInfo:
        w = self.writer
        return RecorderInfo(segment=str(w.path) if w and w.path else "")


def main() -> None:
    main_for(RecorderActor)


if __name__ == "__main__":
    main()
