"""Recordings: every bus message, appended to segment files (DESIGN: recorder).

One concept per module: ``format`` (bytes on disk), ``reader`` (one segment, either
form), ``writer`` (the recorder's hot path), ``index`` (per-segment sidecar),
``locks`` (open vs closed), ``compress`` (crash-safe compression), ``directory``
(listing, seeking, reading many, removing), ``retention`` (what to remove, pure) and
``maintenance`` (compress, prune and measure a directory: the recorder's housekeeping
and the operator's ``recordings`` commands share it). The names below are the reading
and writing API the rest of the project imports.
"""

from shared.recording.directory import (
    SegmentFacts,
    cleanup,
    delete_segment,
    free_bytes,
    last_before,
    read_recording,
    seek_segments,
    segment_facts,
    segment_paths,
)
from shared.recording.format import (
    FORMAT_VERSION,
    FRAME_OVERHEAD,
    MAGIC,
    SUFFIX,
    ZSUFFIX,
    Header,
    ReadReport,
    Record,
    RecordingError,
    decode_header,
    encode_header,
    encode_record,
    is_compressed,
    iso_ns,
    iter_frames,
    parse_time,
    segment_name,
)
from shared.recording.reader import SegmentInfo, SegmentReader, scan_segment, start_of
from shared.recording.writer import SegmentWriter, ensure_private_dir

__all__ = [
    "FORMAT_VERSION", "FRAME_OVERHEAD", "MAGIC", "SUFFIX", "ZSUFFIX", "Header", "ReadReport",
    "Record", "RecordingError", "SegmentFacts", "SegmentInfo", "SegmentReader",
    "SegmentWriter", "cleanup", "decode_header", "delete_segment", "encode_header",
    "encode_record", "ensure_private_dir", "free_bytes", "is_compressed", "iso_ns", "last_before",
    "iter_frames", "parse_time", "read_recording", "scan_segment", "seek_segments",
    "segment_facts", "segment_name", "segment_paths", "start_of",
]
