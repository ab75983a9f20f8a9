"""Publishing records into a pipeline's bus: ``feed`` at the recorded pacing divided by
``speed`` (or as fast as possible), telling a progress callback how far it got, and
``BusClient``, a publisher that is connected for sure before the first record goes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import zmq

from bus.auth import load_for
from bus.messages import Heartbeat
from bus.roles import REPLAY
from bus.transport import Publisher, new_incarnation
from replay.errors import ReplayError
from replay.select import Reframer
from shared.config import Config
from shared.recording import Record

PROBE_TOPIC = "replay.probe"



@dataclass
class FeedStats:
    published: int = 0
    skipped: int = 0  # undecodable payloads not fed
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0


def feed(
    publish: Callable[[bytes, bytes], None],
    records: Iterable[Record],
    *,
    speed: float | None,
    reframer: Reframer,
    progress: Callable[[int], None] | None = None,
) -> FeedStats:
    """Publish ``records`` in order. ``speed=None`` is as fast as possible; otherwise a
    record recorded ``d`` ns after the first is sent ``d / speed`` ns after the start.
    Lateness is never "caught up" by sending in a burst faster than recorded: the
    schedule is absolute, so a late record is sent at once and the next ones are on time.
    Order is all that --verify needs (replay/verify.py): speed only sets how long it
    takes."""
    stats = FeedStats()
    t0 = time.monotonic_ns()
    first_ns: int | None = None
    sleep = time.sleep
    mono = time.monotonic_ns
    for i, rec in enumerate(records):
        if speed is not None and rec.recv_ns >= 0:
            if first_ns is None:
                first_ns = rec.recv_ns
            due = t0 + int((rec.recv_ns - first_ns) / speed)
            ahead = due - mono()
            if ahead > 200_000:  # sleeping less than 0.2 ms costs more than it keeps
                sleep(ahead / 1e9)
        payload = reframer(rec.topic, rec.payload)
        if payload is None:
            stats.skipped += 1
            continue
        publish(rec.topic.encode(), payload)
        stats.published += 1
        if progress is not None and i % 1000 == 0:
            progress(i)
    stats.elapsed_s = (mono() - t0) / 1e9
    return stats


class BusClient:
    """A publisher (and probe subscriber) on a pipeline's bus, connected for sure: a PUB
    drops what it sends before the bus's subscriptions reach it (slow joiner), so
    ``connect`` sends probes until one comes back through the proxy. Subscriptions
    travel to a new publisher in the order they were made, so once our own probe
    subscription has arrived, those of the pipeline's actors (made earlier) have too."""

    def __init__(self, cfg: Config, *, hwm: int = 1_000_000) -> None:
        self.ctx = zmq.Context()
        self.auth = load_for(cfg.data_path, REPLAY)
        self.pub = Publisher(self.ctx, cfg.bus_pub_endpoint, REPLAY, new_incarnation(),
                             hwm=hwm, auth=self.auth)
        self._sub_endpoint = cfg.bus_sub_endpoint

    def connect(self, timeout_s: float = 10.0) -> None:
        probe = self.ctx.socket(zmq.SUB)
        probe.setsockopt(zmq.LINGER, 0)
        probe.setsockopt(zmq.SUBSCRIBE, PROBE_TOPIC.encode())
        self.auth.client(probe, "bus")
        probe.connect(self._sub_endpoint)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self.pub.publish(Heartbeat(actor="replay", pid=os.getpid(), state="READY",
                                           ready=True, uptime_s=0.0, counters={}),
                                 PROBE_TOPIC)
                if probe.poll(50, zmq.POLLIN):
                    probe.recv_multipart()
                    return
        finally:
            probe.close(linger=0)
        raise ReplayError(f"could not reach the replay bus at {self._sub_endpoint}")

    def publish_raw(self, topic: bytes, payload: bytes) -> None:
        self.pub.publish_raw(topic, payload)

    def close(self) -> None:
        self.pub.close()
        self.ctx.destroy(linger=2000)  # let the last frames leave before we go
