"""What a replay feeds: the records of a recording (topic prefixes, time window) plus
*primers*, and the new envelopes they travel in.

- ``select_records``: the records to feed plus primers: with ``--from``, the last record
  before the window of each state topic (``md.rules.*``, ``md.status``, ``portfolio``),
  so the pipeline starts knowing the exchange rules, feed freshness and portfolio that
  the recorded session knew then.
- ``Reframer``: gives every replayed payload a new envelope (see its docstring for the
  gap-detection decision); the body bytes are the recorded ones, never re-encoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from bus.messages import Envelope, EnvelopeOnly, envelope_decoder
from bus.transport import new_incarnation
from shared.recording import ReadReport, Record, last_before, read_recording

MARKET_TOPICS = ("md.",)
# Every input of strategy and risk (replay/verify.py): market data and the bus clock,
# the executor's messages, the intents risk judges and the decisions the strategy
# applies (risk's, and the strategy's own stand-ins on intent.outcome.), controls (fed
# on replay.control: the replay identity may not publish control, bus/roles.py); and
# the two actors' heartbeats, which say where each began to take input (not fed).
VERIFY_TOPICS = ("md.", "portfolio", "order.", "fill.", "intent.", "decision.", "control",
                 "hb.strategy", "hb.risk")
PRIMER_TOPICS = ("md.rules.", "md.status", "portfolio")



@dataclass
class Selection:
    records: list[Record]
    primers: list[Record]
    reports: dict[str, ReadReport]


def _matches(topic: str, prefixes: Sequence[str]) -> bool:
    return topic.startswith(tuple(prefixes))


def select_records(
    target: str | os.PathLike[str],
    topics: Sequence[str],
    from_ns: int | None = None,
    to_ns: int | None = None,
) -> Selection:
    reports: dict[str, ReadReport] = {}
    records = list(read_recording(target, topics, from_ns, to_ns, reports))
    primers = _primers(target, topics, from_ns) if from_ns is not None else []
    return Selection(records, primers, reports)


def _primers(target: str | os.PathLike[str], topics: Sequence[str], from_ns: int) -> list[Record]:
    """The last record before ``from_ns`` of every state topic that is also selected."""
    wanted = [p for p in PRIMER_TOPICS if any(p.startswith(t) or t.startswith(p)
                                              for t in topics)]
    if not wanted:
        return []
    # Walks back from the window through the segment indexes: a window late in a long
    # recording opens only the segments that hold the state it needs.
    last = last_before(target, wanted, from_ns, keep=lambda topic: _matches(topic, topics))
    return sorted(last.values(), key=lambda r: r.recv_ns)


# --- re-framing ----------------------------------------------------------------------


_env_encoder = msgspec.msgpack.Encoder()


class Reframer:
    """New envelope, recorded body.

    Decision: a replay selects topics (md.* without the heartbeats that shared the
    marketdata publisher's sequence, a time window, ...), so the recorded sequence
    numbers would show gaps to every consumer, and a recorded ``portfolio`` would look
    like a restart of the replay pipeline's own executor. So each replayed *topic* is its
    own stream: ``source = "replay/<recorded source>/<topic>"``, a fresh incarnation per
    replay run, seq 1, 2, 3… without holes. Any prefix subscription receives whole topics,
    so no consumer sees a gap. ``wall_ns`` and ``mono_ns`` stay the recorded ones: they
    are the message clock that strategy and risk decide by, so time-dependent decisions
    (cooldowns, throttles, data age) replay as they were made.
    """

    def __init__(self, incarnation: str | None = None) -> None:
        self.incarnation = incarnation or f"replay-{new_incarnation()}"
        self._seq: dict[str, int] = {}
        self.malformed = 0

    def __call__(self, topic: str, payload: bytes) -> bytes | None:
        try:
            packet = envelope_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1  # recorded as received, but not worth feeding anyone
            return None
        env = packet.env
        source = f"replay/{env.source}/{topic}"
        seq = self._seq.get(source, 0) + 1
        self._seq[source] = seq
        new_env = Envelope(env.schema, source, self.incarnation, seq, env.wall_ns, env.mono_ns)
        return _env_encoder.encode(EnvelopeOnly(new_env, packet.body))
