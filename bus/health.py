"""Bus health from the envelopes' stamps: per-hop and per-actor latency, rates, sequence
gaps (pure: the caller passes every message and the receive time; no I/O).

One computation for every view: the supervisor keeps a ``BusHealth`` over everything on
the bus and serves ``report()`` in its status document (``status``, ``status --json``
``bus_health``, the dashboard's bus page); the dashboard's Prometheus histograms are
fed by the same ``HopMatcher``.

Every stamp compared is CLOCK_MONOTONIC of one host (the envelope's ``mono_ns``, a
book's ``recv_mono_ns``, an intent's ``book_mono_ns``), except the exchange hop, which
compares the exchange's own time stamp with our wall clock on receipt (so it includes
the clock offset to the exchange; on the simulator both are this host's). The hops are
named in ``shared/hops.py``:

- ``exchange→marketdata``: exchange stamp of a book → marketdata's receipt (REST books
  only: BTCTurk's WebSocket order-book messages carry no time stamp);
- ``marketdata``: marketdata's receipt of a book → its publication on the bus;
- ``book→intent``: marketdata's receipt of the book → the strategy publishing its intent
  (the bus to the strategy and the strategy's decision);
- ``intent→decision``: the intent published → risk publishing its verdict; risk asks the
  executor before it publishes an approval, so an approved intent's figure includes the
  executor's reservation (risk's own share is not separately visible on the bus);
- ``intent→order``: the intent published → the executor's first order event (the key
  reserved, before the send): strategy → risk → executor;
- ``executor→exchange``: the executor's first order event → the first one carrying the
  exchange's answer (any state past PENDING/SUBMITTED): the exchange round trip;
- ``bus→<observer>``: any publication → received by the observer (the bus's own cost,
  plus the observer's queueing: an upper bound of what a subscriber waits).

Per actor (by the envelope's source): its publications' rate and their transit to the
observer, and the gaps in its sequences as the observer saw them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from bus.limits import MAX_PAYLOAD_BYTES, MAX_TOPIC_BYTES
from bus.messages import (
    Envelope,
    EnvelopeOnly,
    Packet,
    Str,
)
from bus.transport import SequenceTracker, SubscriberStats
from shared import hops
from shared.windows import Window, WindowStats

WINDOWS_S: tuple[tuple[str, int], ...] = (("1m", 60), ("15m", 900))
SPAN_S = max(s for _, s in WINDOWS_S)
PENDING = 4096  # intents and orders remembered for matching their later events
MIN_SAMPLES_TO_FLAG = 5  # a "p99" of fewer samples is one outlier, not a slow hop
MAX_FLOWS = 64  # publishers tracked one by one; any more are summed as OTHER_SOURCES
OTHER_SOURCES = "(others)"
UNANSWERED = frozenset({"PENDING", "SUBMITTED"})  # order states before the exchange's answer

QUEUE_DEPTH_NOTE = ("not exposed: libzmq has no socket option or counter for the number "
                    "of messages queued in a socket's pipes (ZMQ_EVENTS only says whether "
                    "one is ready); a backlog shows as transit latency, and a full queue "
                    "as gaps (PUB drops at the high-water mark)")


class HopMatcher:
    """Turns messages into hop samples: ``on_sample(hop, ms, recv_mono_ns)`` for each.
    Remembers the last ``PENDING`` intents and orders to match their later events.

    Pairing intents with decisions allows for arrival out of order: the strategy
    announces an intent just after sending it to risk, so risk's decision can reach an
    observer first. Each intent publication pairs with one decision, whichever comes
    first; a strategy repeats a rejected intent under the same id, and matching a decision
    with the previous round's publication would report seconds of latency that never
    happened."""

    def __init__(self, observer: str, on_sample: Callable[[str, float, int], None]) -> None:
        self.transit_hop = hops.transit(observer)
        self._emit = on_sample
        self._intent_open: OrderedDict[str, int] = OrderedDict()  # awaiting its decision
        self._decision_early: OrderedDict[str, int] = OrderedDict()  # before its intent
        self._intent_mono: OrderedDict[str, int] = OrderedDict()  # latest, for orders
        self._ordered: OrderedDict[str, None] = OrderedDict()  # first order event seen
        self._order_mono: OrderedDict[str, int] = OrderedDict()  # reserved, not answered

    def observe(self, packet: Packet, recv_mono_ns: int) -> None:
        self.observe_body(packet.body, packet.env.mono_ns, recv_mono_ns)

    def observe_body(self, body: Any, sent_mono_ns: int,
                     recv_mono_ns: int) -> None:
        """A message's body: whole (bus.messages) or only its stamps and ids (the light
        structs below). Both carry the same field names and the same tag, the class
        name of the message, which is what this dispatches on."""
        self.add(self.transit_hop, (recv_mono_ns - sent_mono_ns) / 1e6, recv_mono_ns)
        tag = body.__struct_config__.tag if body is not None else None
        if tag == "BookSnapshot":
            self.book(body.exchange_ts_ms, body.recv_wall_ns, body.recv_mono_ns,
                      sent_mono_ns, recv_mono_ns)
        elif tag == "Intent":
            self.intent(body.intent_id, sent_mono_ns, body.book_mono_ns, recv_mono_ns)
        elif tag == "RiskDecision":
            self.decision(body.intent_id, sent_mono_ns, recv_mono_ns)
        elif tag == "OrderEvent":
            self.order(body.intent_id, body.client_order_id, body.state, sent_mono_ns,
                       recv_mono_ns)

    def add(self, hop: str, ms: float, at_ns: int) -> None:
        if ms < 0:  # clocks of two hosts, or a stamp we cannot trust: not a latency
            return
        self._emit(hop, ms, at_ns)

    def book(self, exchange_ts_ms: int, recv_wall_ns: int, recv_mono_ns: int,
             published_mono_ns: int, at_ns: int) -> None:
        if exchange_ts_ms > 0:
            self.add(hops.EXCHANGE_TO_MARKETDATA, recv_wall_ns / 1e6 - exchange_ts_ms, at_ns)
        if recv_mono_ns > 0:
            self.add(hops.MARKETDATA, (published_mono_ns - recv_mono_ns) / 1e6, at_ns)

    def intent(self, intent_id: str, published_mono_ns: int, book_mono_ns: int,
               at_ns: int) -> None:
        if book_mono_ns > 0:
            self.add(hops.BOOK_TO_INTENT, (published_mono_ns - book_mono_ns) / 1e6, at_ns)
        _remember(self._intent_mono, intent_id, published_mono_ns)
        decided = self._decision_early.pop(intent_id, None)
        if decided is not None:  # its decision came first: this round is complete
            self._intent_open.pop(intent_id, None)
            # Published before the announcement even (risk answered the request before
            # the strategy's loop announced it): faster than the stamps can tell, so 0,
            # not dropped (dropping the fast ones would push the quantiles up).
            self.add(hops.INTENT_TO_DECISION,
                     max(0.0, (decided - published_mono_ns) / 1e6), at_ns)
        else:
            _remember(self._intent_open, intent_id, published_mono_ns)

    def decision(self, intent_id: str, published_mono_ns: int, at_ns: int) -> None:
        start = self._intent_open.pop(intent_id, None)
        if start is not None:
            self.add(hops.INTENT_TO_DECISION, (published_mono_ns - start) / 1e6, at_ns)
        else:
            _remember(self._decision_early, intent_id, published_mono_ns)

    def order(self, intent_id: str, client_order_id: str, state: str,
              published_mono_ns: int, at_ns: int) -> None:
        if intent_id not in self._ordered:  # only an intent's first order event is the hop
            _remember(self._ordered, intent_id, None)
            start = self._intent_mono.get(intent_id)
            if start is not None:
                self.add(hops.INTENT_TO_ORDER, (published_mono_ns - start) / 1e6, at_ns)
        sent = self._order_mono.get(client_order_id)
        if state in UNANSWERED:
            if sent is None:
                _remember(self._order_mono, client_order_id, published_mono_ns)
        elif sent is not None:  # the first answer: later changes are not this hop
            del self._order_mono[client_order_id]
            self.add(hops.EXECUTOR_TO_EXCHANGE, (published_mono_ns - sent) / 1e6, at_ns)


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Insert or replace; the oldest entry goes beyond ``PENDING`` (bounded memory)."""
    table[key] = value
    table.move_to_end(key)
    if len(table) > PENDING:
        table.popitem(last=False)


# --- light decoding: only the stamps and ids a hop needs ------------------------------
# The observer of the whole bus decodes every message; a full strict decode of a book
# (every level a validated Decimal) costs ~10x these, on every tick, beside the hot path.
# Tags are the bodies' class names (bus.messages.Msg is tag=True); other fields ignored.

class _BookStamps(msgspec.Struct, tag="BookSnapshot", kw_only=True):
    exchange_ts_ms: int = 0
    recv_wall_ns: int = 0
    recv_mono_ns: int = 0


class _IntentIds(msgspec.Struct, tag="Intent", kw_only=True):
    intent_id: Str
    book_mono_ns: int = 0


class _DecisionIds(msgspec.Struct, tag="RiskDecision", kw_only=True):
    intent_id: Str


class _OrderIds(msgspec.Struct, tag="OrderEvent", kw_only=True):
    intent_id: Str
    client_order_id: Str
    state: Str


_envelope_decoder = msgspec.msgpack.Decoder(EnvelopeOnly)
_LIGHT: dict[str, msgspec.msgpack.Decoder[Any]] = {
    "md.book.": msgspec.msgpack.Decoder(_BookStamps),
    "intent.": msgspec.msgpack.Decoder(_IntentIds),
    "decision.": msgspec.msgpack.Decoder(_DecisionIds),
    "order.": msgspec.msgpack.Decoder(_OrderIds),
}


class _Flow:
    """One publishing actor as the observer sees it."""

    def __init__(self, started_s: float) -> None:
        self.transit = Window(SPAN_S, started_s=started_s)
        self.stats = SubscriberStats()
        self.seq = SequenceTracker(self.stats)


class BusHealth:
    """Windows per hop and per publishing actor, kept by one long-lived observer."""

    def __init__(self, observer: str, started_mono_ns: int) -> None:
        self.observer = observer
        self.started_s = started_mono_ns / 1e9
        self.hops: dict[str, Window] = {
            h: Window(SPAN_S, started_s=self.started_s, seed=i)
            for i, h in enumerate((*hops.PIPELINE, hops.transit(observer)))}
        self.flows: dict[str, _Flow] = {}
        self.matcher = HopMatcher(observer, self._sample)
        self.malformed = 0  # frames observe_raw could not read (counted, skipped)

    def _sample(self, hop: str, ms: float, at_ns: int) -> None:
        self.hops[hop].add(at_ns / 1e9, ms)

    def observe_raw(self, frames: list[bytes], recv_mono_ns: int) -> bool:
        """One message as it came off the socket, decoded only as far as bus health
        needs (envelope, and a hop's stamps and ids). False: malformed, counted."""
        if (len(frames) != 2 or len(frames[0]) > MAX_TOPIC_BYTES
                or len(frames[1]) > MAX_PAYLOAD_BYTES):
            self.malformed += 1
            return False
        try:
            topic = frames[0].decode()
            env = _envelope_decoder.decode(frames[1])
            light = next((d for prefix, d in _LIGHT.items() if topic.startswith(prefix)),
                         None)
            body = light.decode(env.body) if light is not None else None
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            self.malformed += 1
            return False
        self._flow(topic, env.env, recv_mono_ns)
        self.matcher.observe_body(body, env.env.mono_ns, recv_mono_ns)
        return True

    def observe(self, topic: str, packet: Packet, recv_mono_ns: int) -> None:
        """One decoded message (what a ``bus.transport.Subscriber`` returns)."""
        self._flow(topic, packet.env, recv_mono_ns)
        self.matcher.observe(packet, recv_mono_ns)

    def _flow(self, topic: str, env: Envelope, recv_mono_ns: int) -> None:
        source = env.source
        flow = self.flows.get(source)
        if flow is None:
            if len(self.flows) >= MAX_FLOWS:  # a source is a claim: bounded all the same
                source = OTHER_SOURCES
                flow = self.flows.get(source)
            if flow is None:
                flow = self.flows[source] = _Flow(self.started_s)
        flow.stats.received += 1
        flow.seq.observe(env, topic)
        transit = (recv_mono_ns - env.mono_ns) / 1e6
        if transit >= 0:
            flow.transit.add(recv_mono_ns / 1e9, transit)

    def report(self, now_mono_ns: int, bounds_ms: Mapping[str, float],
               heartbeats: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
        """The ``bus_health`` section of the status document. ``bounds_ms``: the p99
        bound per hop (hops not in it are not judged); ``heartbeats``: every actor's
        last heartbeat counters (drops, its own subscriber's gaps, the proxy's and the
        recorder's figures)."""
        now_s = now_mono_ns / 1e9
        hop_rows: list[dict[str, Any]] = []
        slow: list[str] = []
        for hop, window in self.hops.items():
            per = {name: window.stats(now_s, span) for name, span in WINDOWS_S}
            bound = bounds_ms.get(hop)
            recent = per[WINDOWS_S[0][0]]
            over = (bound is not None and recent.p99 is not None
                    and recent.count >= MIN_SAMPLES_TO_FLAG and recent.p99 > bound)
            if over:
                slow.append(f"{hop} p99 {recent.p99:.3f} ms > {bound:g} ms "
                            f"({WINDOWS_S[0][0]}, n={recent.count})")
            hop_rows.append({"hop": hop, "meaning": hops.MEANING.get(hop, "any publication "
                                                                     "-> received here"),
                             "total": window.total, "bound_ms": bound, "over_bound": over,
                             **{name: s.as_dict() for name, s in per.items()}})
        actors: list[dict[str, Any]] = []
        for name in sorted(set(self.flows) | set(heartbeats)):
            actors.append(_actor_row(name, self.flows.get(name), heartbeats.get(name, {}),
                                     now_s))
        return {
            "observer": self.observer,
            "windows_s": {name: span for name, span in WINDOWS_S},
            "observed_s": round(now_s - self.started_s, 3),
            "hops": hop_rows,
            "slow_hops": slow,
            "actors": actors,
            "proxy": _proxy(heartbeats.get("bus", {})),
            "recorder": _recorder(heartbeats.get("recorder")),
            "queue_depth": {"available": False, "why": QUEUE_DEPTH_NOTE},
            "malformed": self.malformed,
        }


def _actor_row(name: str, flow: _Flow | None, counters: Mapping[str, int],
               now_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {"actor": name}
    if flow is not None:
        for label, span in WINDOWS_S:
            row[f"transit_{label}"] = flow.transit.stats(now_s, span).as_dict()
        row.update(published=flow.stats.received, gaps=flow.stats.gaps, lost=flow.stats.lost,
                   restarts=flow.stats.restarts)
    else:
        empty = WindowStats(0, 0.0, None, None, None).as_dict()
        row.update({f"transit_{label}": empty for label, _ in WINDOWS_S})
        row.update(published=0, gaps=0, lost=0, restarts=0)
    # What this actor's own subscriber saw and refused (its heartbeat): the runtime's
    # counters are bus_-prefixed, the recorder's are not.
    prefix = "bus_" if "bus_received" in counters else ""
    row["subscriber"] = {
        "received": counters.get(f"{prefix}received", counters.get("records")),
        "gaps": counters.get(f"{prefix}gaps"),
        "lost": counters.get(f"{prefix}lost"),
        "drops": counters.get(f"{prefix}malformed"),  # oversize and future included
        "oversize": counters.get(f"{prefix}oversize"),
        "future_stamps": counters.get(f"{prefix}future_stamps"),
    } if counters else None
    return row


def _proxy(counters: Mapping[str, int]) -> dict[str, Any] | None:
    if not counters:
        return None
    reasons = {k.removeprefix("proxy_dropped_"): v for k, v in sorted(counters.items())
               if k.startswith("proxy_dropped_")}
    return {"forwarded": counters.get("proxy_forwarded", 0),
            "dropped": counters.get("proxy_dropped", 0), "dropped_by_reason": reasons}


def _recorder(counters: Mapping[str, int] | None) -> dict[str, Any] | None:
    """The recorder's lag: how long its oldest unflushed record waited at the last flush,
    and what it dropped or missed."""
    if not counters:
        return None
    return {"flush_lag_ms": counters.get("flush_lag_ms"), "records": counters.get("records"),
            "dropped": counters.get("dropped"), "gaps": counters.get("gaps"),
            "lost": counters.get("lost"), "write_errors": counters.get("write_errors")}
