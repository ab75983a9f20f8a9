"""The segment format (shared/recording.py): round trip, torn tails, rotation, seek,
topic filter, header checks. Pure: no processes."""

from __future__ import annotations

import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.messages import (
    DATA_BODY_TYPES,
    SCHEMA_VERSION,
    Envelope,
    Packet,
    packet_decoder,
    packet_encoder,
)
from shared.recording import (
    FORMAT_VERSION,
    RecordingError,
    SegmentReader,
    SegmentWriter,
    encode_header,
    encode_record,
    iso_ns,
    parse_time,
    read_recording,
    scan_segment,
    seek_segments,
    segment_paths,
)

T0 = 1_700_000_000_000_000_000


# --- one sample instance of every body type, built from the type itself ---------------


def sample(tp: Any) -> Any:
    """A valid value of annotation ``tp`` (non-empty containers, non-None options), so
    a new message type is covered without editing this test."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is str:
        return "x1"
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 1.5
    if tp is Decimal:
        return Decimal("123.4500")
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in args if a is not type(None)))
    if origin is list:
        return [sample(args[0])]
    if origin is tuple:
        return tuple(sample(a) for a in args)
    if origin is dict:
        return {sample(args[0]): sample(args[1])}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return build(tp)
    raise TypeError(f"no sample for {tp!r}")


def build(cls: type[msgspec.Struct]) -> msgspec.Struct:
    hints = typing.get_type_hints(cls)
    return cls(**{f: sample(hints[f]) for f in cls.__struct_fields__})


def packet_for(body: Any, seq: int = 1, source: str = "test") -> bytes:
    env = Envelope(SCHEMA_VERSION, source, "inc-1", seq, T0 + seq, 5 + seq)
    return packet_encoder.encode(Packet(env, body))


def write(tmp: Path, records: list[tuple[int, str, bytes]], **kw: Any) -> SegmentWriter:
    w = SegmentWriter(tmp, schema_version=SCHEMA_VERSION, **kw)
    for ts, topic, payload in records:
        w.append(ts, topic.encode(), payload)
    w.close()
    return w


def test_every_message_type_round_trips(tmp_path: Path) -> None:
    assert len(DATA_BODY_TYPES) >= 12
    bodies = [build(t) for t in DATA_BODY_TYPES]
    recs = [(T0 + i, f"t.{type(b).__name__}", packet_for(b, i + 1)) for i, b in enumerate(bodies)]
    write(tmp_path, recs)
    out = list(read_recording(tmp_path))
    assert [(r.recv_ns, r.topic, r.payload) for r in out] == recs
    for rec, body in zip(out, bodies, strict=True):
        assert packet_decoder.decode(rec.payload).body == body


def test_header_carries_versions_start_and_meta(tmp_path: Path) -> None:
    write(tmp_path, [(T0, "md.x", b"p")], meta={"mode": "paper"})
    [path] = segment_paths(tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"
    with SegmentReader(path) as r:
        assert r.header.format_version == FORMAT_VERSION
        assert r.header.schema_version == SCHEMA_VERSION
        assert r.header.start_ns == T0
        assert r.header.meta == {"mode": "paper"}


@pytest.mark.parametrize("damage", ["magic", "crc", "short"])
def test_bad_header_is_refused(tmp_path: Path, damage: str) -> None:
    raw = bytearray(encode_header(1, T0, {"a": 1}) + encode_record(T0, b"t", b"p"))
    if damage == "magic":
        raw[0] ^= 0xFF
    elif damage == "crc":
        raw[20] ^= 0xFF
    else:
        raw = raw[:10]
    path = tmp_path / "rec-x.btcrec"
    path.write_bytes(bytes(raw))
    with pytest.raises(RecordingError):
        SegmentReader(path)
    assert scan_segment(path).error


def _segment_bytes(n: int) -> tuple[bytes, list[int]]:
    """A header and n records; returns the bytes and the end offset of each record."""
    raw = encode_header(SCHEMA_VERSION, T0)
    ends = []
    for i in range(n):
        raw += encode_record(T0 + i, f"md.book.S{i}".encode(), packet_for(build(
            DATA_BODY_TYPES[i % len(DATA_BODY_TYPES)]), i + 1))
        ends.append(len(raw))
    return raw, ends


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000), n=st.integers(1, 6))
def test_torn_tail_anywhere_keeps_every_complete_record(tmp_path_factory: Any, cut: int,
                                                        n: int) -> None:
    raw, ends = _segment_bytes(n)
    header_len = len(encode_header(SCHEMA_VERSION, T0))
    cut = header_len + cut % (len(raw) - header_len + 1)
    path = tmp_path_factory.mktemp("torn") / "rec-t.btcrec"
    path.write_bytes(raw[:cut])
    complete = sum(1 for e in ends if e <= cut)
    with SegmentReader(path) as r:
        got = list(r.records())
        assert len(got) == complete
        expected_valid = ends[complete - 1] if complete else header_len
        assert r.report.valid_bytes == expected_valid
        assert r.report.torn_tail == (cut != expected_valid)
        assert r.report.bytes_skipped == cut - expected_valid
    info = scan_segment(path)
    assert info.records == complete and info.torn_tail == (cut != expected_valid)


def test_flipped_byte_in_last_record_is_a_reported_tail(tmp_path: Path) -> None:
    raw, ends = _segment_bytes(3)
    damaged = bytearray(raw)
    damaged[ends[1] + 20] ^= 0x01  # inside the third record's content
    path = tmp_path / "rec-c.btcrec"
    path.write_bytes(bytes(damaged))
    info = scan_segment(path)
    assert info.records == 2
    assert info.torn_tail and info.tail_reason == "checksum mismatch"
    assert info.bytes_skipped == len(raw) - ends[1]


def test_absurd_length_is_not_followed(tmp_path: Path) -> None:
    raw, ends = _segment_bytes(1)
    path = tmp_path / "rec-l.btcrec"
    path.write_bytes(raw + b"\xff\xff\xff\x7f" + b"\0" * 12)
    info = scan_segment(path)
    assert info.records == 1 and info.torn_tail and "length" in info.tail_reason


def test_unflushed_records_are_not_in_the_file_flushed_ones_are(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, schema_version=1)
    w.append(T0, b"a", b"1")
    w.flush(T0 + 5_000_000)
    assert w.last_flush_lag_ms == 5
    w.append(T0 + 1, b"b", b"2")  # never flushed: a SIGKILL now loses only this one
    assert [r.topic for r in read_recording(tmp_path)] == ["a"]
    w.flush()
    assert [r.topic for r in read_recording(tmp_path)] == ["a", "b"]
    w.close()


def test_rotation_by_size_never_splits_a_record(tmp_path: Path) -> None:
    payload = b"z" * 100
    w = write(tmp_path, [(T0 + i, "md.a", payload) for i in range(50)], max_bytes=1000)
    paths = segment_paths(tmp_path)
    assert len(paths) == w.segments > 5
    assert all(p.stat().st_size <= 1000 for p in paths)
    assert [r.recv_ns for r in read_recording(tmp_path)] == [T0 + i for i in range(50)]
    assert all(not scan_segment(p).torn_tail for p in paths)


def test_an_oversized_record_still_gets_written(tmp_path: Path) -> None:
    write(tmp_path, [(T0, "big", b"y" * 5000), (T0 + 1, "big", b"y" * 5000)], max_bytes=1000)
    assert len(segment_paths(tmp_path)) == 2
    assert len(list(read_recording(tmp_path))) == 2


def test_rotation_by_time(tmp_path: Path) -> None:
    s = 1_000_000_000
    write(tmp_path, [(T0 + i * s // 2, "md.a", b"p") for i in range(10)], max_s=2.0)
    paths = segment_paths(tmp_path)
    assert len(paths) == 3  # 0-1.5 s, 2-3.5 s, 4-4.5 s
    starts = [scan_segment(p).start_ns for p in paths]
    assert starts == [T0, T0 + 2 * s, T0 + 4 * s]
    assert paths == sorted(paths)  # names sort in time order


def test_seek_by_time_and_topic_filter(tmp_path: Path) -> None:
    s = 1_000_000_000
    recs = [(T0 + i * s, "md.book.BTCTRY" if i % 2 else "hb.marketdata", b"%d" % i)
            for i in range(20)]
    write(tmp_path, recs, max_s=5.0)
    paths = segment_paths(tmp_path)
    assert len(paths) == 4
    # Whole segments outside the window are not even opened.
    assert seek_segments(paths, T0 + 11 * s, T0 + 13 * s) == paths[2:3]
    assert seek_segments(paths, T0 + 10 * s, None) == paths[2:]
    assert seek_segments(paths, None, T0 + 4 * s) == paths[:1]
    got = list(read_recording(tmp_path, ["md."], T0 + 7 * s, T0 + 12 * s))
    assert [r.payload for r in got] == [b"7", b"9", b"11"]
    assert {r.topic for r in read_recording(tmp_path, ["hb", "md.book.X"])} == {"hb.marketdata"}


def test_reader_of_a_single_file_and_missing_path(tmp_path: Path) -> None:
    write(tmp_path, [(T0, "a", b"1")])
    [p] = segment_paths(tmp_path)
    assert [r.payload for r in read_recording(p)] == [b"1"]
    with pytest.raises(FileNotFoundError):
        segment_paths(tmp_path / "nope")


def test_scan_counts_top_level_topics(tmp_path: Path) -> None:
    write(tmp_path, [(T0, "md.book.A", b""), (T0 + 1, "md.status", b""), (T0 + 2, "hb.x", b"")])
    info = scan_segment(segment_paths(tmp_path)[0])
    assert info.topics == {"hb": 1, "md": 2}
    assert (info.first_ns, info.end_ns, info.records) == (T0, T0 + 2, 3)


def test_segment_name_collision_stays_unique(tmp_path: Path) -> None:
    a = SegmentWriter(tmp_path, schema_version=1)
    b = SegmentWriter(tmp_path, schema_version=1)
    a.append(T0, b"a", b"")
    b.append(T0, b"b", b"")
    a.close()
    b.close()
    assert len(segment_paths(tmp_path)) == 2 and len(list(tmp_path.glob("*.btcidx"))) == 2


def test_parse_time() -> None:
    assert parse_time("1700000000") == 1_700_000_000 * 10**9
    assert parse_time("1700000000.5") == 1_700_000_000_500_000_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000 * 10**9
    assert parse_time("2023-11-15T01:13:20.25+03:00") == 1_700_000_000_250_000_000
    assert iso_ns(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"
    for bad in ("yesterday", "nan", ""):
        with pytest.raises(ValueError):
            parse_time(bad)
