"""Market data for a backtest: the ``md.`` messages of recordings (full session
recordings or ``record-market`` ones), decoded, in recorded order; and a synthetic
generator (tests and bench/backtest.py), written through the recording format so that
the reading path is the real one."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import msgspec

from bus.messages import (
    SCHEMA_VERSION,
    BookSnapshot,
    Envelope,
    FeedStatus,
    Packet,
    PublicTrade,
    SymbolRules,
    packet_decoder,
    packet_encoder,
)
from shared.recording import (
    RecordingError,
    encode_header,
    encode_record,
    read_recording,
    segment_name,
    segment_paths,
)
from shared.recording.directory import spans

MARKET_TOPICS = ("md.book.", "md.trade.", "md.rules.", "md.status")


class _RawBook(msgspec.Struct, tag="BookSnapshot", kw_only=True):
    """A BookSnapshot with its levels left as text: msgspec's Decimal decoding costs
    about three times Decimal(str) here, and books are nearly all a backtest reads."""

    symbol: str
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    source: str
    exchange_ts_ms: int
    recv_wall_ns: int
    recv_mono_ns: int
    age_ms: int
    change_set: int | None = None


class _RawBookPacket(msgspec.Struct, array_like=True):
    env: Envelope
    body: _RawBook


_book_decoder = msgspec.msgpack.Decoder(_RawBookPacket)


def book_record(payload: bytes) -> tuple[int, BookSnapshot]:
    """(envelope wall_ns, book) of one recorded ``md.book.*`` payload."""
    p = _book_decoder.decode(payload)
    b = p.body
    return p.env.wall_ns, BookSnapshot(
        symbol=b.symbol, bids=[(Decimal(x), Decimal(y)) for x, y in b.bids],
        asks=[(Decimal(x), Decimal(y)) for x, y in b.asks],
        source=b.source,  # type: ignore[arg-type]
        exchange_ts_ms=b.exchange_ts_ms, recv_wall_ns=b.recv_wall_ns,
        recv_mono_ns=b.recv_mono_ns, age_ms=b.age_ms, change_set=b.change_set)


_OPEN_END = 2**63 - 1  # the end spans() gives a segment still being written


def _bounds(target: str | os.PathLike[str]) -> tuple[int, int] | None:
    """First and last record time of a recording, from its segment indexes (a segment
    still being written ends now)."""
    try:
        found = spans(segment_paths(target))
    except (OSError, RecordingError):
        return None  # the run itself says what is wrong with it
    if not found:
        return None
    last = max(s.last_ns for s in found)
    return min(s.first_ns for s in found), time.time_ns() if last >= _OPEN_END else last


def market_span_s(targets: Sequence[str | os.PathLike[str]]) -> int:
    """Seconds of recorded time in ``targets``: the length of a backtest's progress bar."""
    total = 0
    for target in targets:
        if (b := _bounds(target)) is not None:
            total += max(0, b[1] - b[0]) // 10**9
    return total


def market_messages(targets: Sequence[str | os.PathLike[str]],
                    symbols: Sequence[str] = (),
                    progress: Callable[[int], None] | None = None,
                    ) -> Iterator[tuple[int, object]]:
    """(envelope wall_ns, body) of every market-data message, recording by recording
    (each in file order). ``symbols``: only these (rules and books; status of all).
    ``progress`` hears the seconds of recorded time read so far (``market_span_s``'s
    unit), every 1,000 records."""
    wanted = {s.upper() for s in symbols}
    done_s = 0
    for target in targets:
        bounds = _bounds(target) if progress is not None else None
        for n, rec in enumerate(read_recording(target, MARKET_TOPICS)):
            if bounds is not None and n % 1000 == 0:
                progress(done_s + max(0, rec.recv_ns - bounds[0]) // 10**9)
            if wanted and not rec.topic.startswith("md.status") and (
                    rec.topic.rsplit(".", 1)[-1] not in wanted):
                continue
            try:
                if rec.topic.startswith("md.book."):
                    yield book_record(rec.payload)
                    continue
                packet = packet_decoder.decode(rec.payload)
            except (msgspec.DecodeError, ArithmeticError):
                continue  # not ours to judge here; `recordings show` reports it
            yield packet.env.wall_ns, packet.body
        if bounds is not None:
            done_s += max(0, bounds[1] - bounds[0]) // 10**9
            progress(done_s)


def write_synthetic(directory: str | os.PathLike[str], *, symbols: Sequence[str],
                    seconds: float, interval_ms: int = 250, seed: int = 7,
                    start_ns: int = 1_700_000_000 * 10**9, depth: int = 10,
                    vol_bps: float = 8.0, trade_every: int = 0) -> Path:
    """One segment of rules, feed status and random-walk books for ``symbols``, each
    updated every ``interval_ms``: what a recorded market looks like to a backtest.
    ``trade_every`` N > 0: after every Nth book of a symbol, a public trade of a tenth
    of the touch, alternately hitting the bid and lifting the ask (drawn without the
    random generator, so the books are the same with or without trades)."""
    rng = random.Random(seed)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / segment_name(start_ns)
    mids = {s: Decimal(rng.choice((2_500_000, 120_000, 6_000))) for s in symbols}
    seq = 0

    def frame(ts: int, topic: str, body: object) -> bytes:
        nonlocal seq
        seq += 1
        env = Envelope(SCHEMA_VERSION, "marketdata", "synthetic", seq, ts, ts)
        return encode_record(ts, topic.encode(), packet_encoder.encode(Packet(env, body)))

    with open(path, "wb") as f:
        f.write(encode_header(SCHEMA_VERSION, start_ns, {"synthetic": True}))
        for s in symbols:
            f.write(frame(start_ns, f"md.rules.{s}", SymbolRules(
                symbol=s, base=s[:-3], quote="TRY", price_scale=2, qty_scale=8,
                tick_size=Decimal("0.01"), min_price=Decimal(0), max_price=Decimal(0),
                min_total=Decimal("10"))))
            f.write(frame(start_ns, "md.status", FeedStatus(symbol=s, fresh=True, source="ws",
                                                            age_ms=0)))
        steps = int(seconds * 1000 / interval_ms)
        for i in range(1, steps + 1):
            ts = start_ns + i * interval_ms * 1_000_000
            for s in symbols:
                mid = mids[s] * (1 + Decimal(rng.gauss(0, vol_bps)) / 10_000)
                mids[s] = mid
                half = mid * Decimal(rng.uniform(1, 6)) / 10_000
                tick = Decimal("0.01")
                bids = [((mid - half - k * mid / 10_000).quantize(tick),
                         Decimal(rng.randint(1, 400)) / Decimal(1000) * 100_000 / mid)
                        for k in range(depth)]
                asks = [((mid + half + k * mid / 10_000).quantize(tick),
                         Decimal(rng.randint(1, 400)) / Decimal(1000) * 100_000 / mid)
                        for k in range(depth)]
                bids = [(p, q.quantize(Decimal("1e-8"))) for p, q in bids]
                asks = [(p, q.quantize(Decimal("1e-8"))) for p, q in asks]
                f.write(frame(ts, f"md.book.{s}", BookSnapshot(
                    symbol=s, bids=bids, asks=asks, source="ws", exchange_ts_ms=ts // 10**6,
                    recv_wall_ns=ts, recv_mono_ns=ts, age_ms=0, change_set=i)))
                if trade_every > 0 and i % trade_every == 0:
                    sell = (i // trade_every) % 2 == 1
                    price, qty = bids[0] if sell else asks[0]
                    f.write(frame(ts, f"md.trade.{s}", PublicTrade(
                        symbol=s, trade_id=f"{s}-{i}", price=price,
                        quantity=max(Decimal("1e-8"), (qty / 10).quantize(Decimal("1e-8"))),
                        side="sell" if sell else "buy", exchange_ts_ms=ts // 10**6,
                        recv_wall_ns=ts)))
    return path
