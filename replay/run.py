"""The whole ``replay`` command: select, start an isolated pipeline, feed, verify."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from replay.errors import ReplayError
from replay.feed import BusClient, FeedStats, feed
from replay.pipeline import IsolatedPipeline
from replay.select import EXECUTOR_TOPICS, MARKET_TOPICS, VERIFY_TOPICS, Reframer, select_records
from replay.verify import (
    DecisionBarrier,
    DecisionCollector,
    VerifyResult,
    compare_decisions,
    config_differences,
    recorded_decisions,
    recorded_strategy_boot,
    recording_meta,
)
from shared.config import Config
from shared.progress import progress, progress_wanted, reached
from shared.recording import ReadReport


@dataclass
class ReplayOptions:
    target: str
    speed: float | None = 1.0  # None: as fast as possible
    topics: tuple[str, ...] = ()
    from_ns: int | None = None
    to_ns: int | None = None
    verify: bool = False
    record: bool = False
    keep: bool = False
    settle_s: float = 2.0  # verify: quiet time that ends the wait for late decisions
    progress: bool | None = None  # None: shared.progress.progress_wanted()
    strategy: dict[str, Any] | None = None  # overrides (tests)
    risk: dict[str, Any] | None = None


@dataclass
class ReplayOutcome:
    feed: FeedStats
    primers: int
    torn: dict[str, ReadReport]
    verify: VerifyResult | None = None
    config_notes: list[str] = field(default_factory=list)


def run_replay(opts: ReplayOptions, base: Config | None) -> ReplayOutcome:
    """Replay ``opts.target`` into an isolated pipeline (and verify when asked).
    Raises ReplayError when it cannot run at all."""
    topics = opts.topics or (VERIFY_TOPICS if opts.verify else MARKET_TOPICS)
    # --verify reads the recorded decisions in the stream too: barriers, never fed.
    read_topics = (*topics, "decision.") if opts.verify else topics
    sel = select_records(opts.target, read_topics, opts.from_ns, opts.to_ns)
    if not sel.records:
        raise ReplayError(f"nothing to replay: no record of {', '.join(topics)} in the window")
    expected = recorded_decisions(opts.target, opts.from_ns, opts.to_ns) if opts.verify else []
    notes = config_differences(recording_meta(opts.target), base) if (
        opts.verify and base is not None) else []
    torn = {p: r for p, r in sel.reports.items() if r.torn_tail}
    # --verify: the recording carries the recorded executor's order/fill/portfolio
    # messages; the pipeline's executor mirrors them instead of adding its own (see
    # actors/executor/actor.py, mirror mode). A plain replay keeps a normal dry-run one.
    extra = {"executor": {"replay_mirror": opts.verify}}
    with IsolatedPipeline(base, record=opts.record, keep=opts.keep,
                          strategy=opts.strategy, risk=opts.risk, extra=extra,
                          strategy_boot=recorded_strategy_boot(opts.target, opts.from_ns,
                                                               opts.to_ns)) as pipe:
        collector = DecisionCollector(pipe.cfg) if opts.verify else None
        client = BusClient(pipe.cfg)
        try:
            client.connect()
            reframer = Reframer()
            feed(client.publish_raw, sel.primers, speed=None, reframer=reframer)
            barrier = DecisionBarrier(collector, expected) if collector is not None else None
            wanted = progress_wanted() if opts.progress is None else opts.progress
            label = "replay --verify" if opts.verify else "replay"
            with progress(len(sel.records), label, enabled=wanted) as bar:
                stats = feed(client.publish_raw, sel.records, speed=opts.speed,
                             reframer=reframer, progress=reached(bar), barrier=barrier,
                             unpaced=EXECUTOR_TOPICS if opts.verify else ())
                reached(bar)(len(sel.records))
            result = None
            if collector is not None:
                collector.settle(len(expected), opts.settle_s,
                                 timeout_s=opts.settle_s + 30.0)
                result = compare_decisions(expected, collector.decisions)
                result.notes = notes
        finally:
            client.close()
            if collector is not None:
                collector.close()
    return ReplayOutcome(stats, len(sel.primers), torn, result, notes)
