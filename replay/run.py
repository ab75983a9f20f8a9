"""The whole ``replay`` command: select, start an isolated pipeline, feed, verify."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from actors.risk import daybook
from replay.errors import ReplayError
from replay.feed import BusClient, FeedStats, feed
from replay.pipeline import IsolatedPipeline
from replay.select import MARKET_TOPICS, VERIFY_TOPICS, Reframer, select_records
from replay.verify import (
    VERIFIED_ACTORS,
    OutputCollector,
    VerifyResult,
    compare_decisions,
    config_differences,
    decode_decisions,
    decode_intents,
    recorded_risk_day,
    recorded_strategy_boot,
    recording_meta,
    start_points,
    verify_feed,
)
from shared.config import Config
from shared.progress import progress, progress_wanted, reached
from shared.recording import ReadReport, Record
from shared.tradingday import TradingDay


def lost_inputs(pipe: IsolatedPipeline, since: float) -> list[str]:
    """The comparison holds only if strategy and risk received every replayed record: a
    message dropped at a high-water mark (the pipeline slower than the feed) is an input
    the recording has and they did not. Their own subscribers count such holes (each
    replayed topic is a gapless stream, replay/select.py); a heartbeat sent after the
    feed tells. Any hole is a difference: the verdict would not be about the code."""
    interval = pipe.cfg.supervisor.heartbeat_interval_s
    time.sleep(max(0.0, interval - (time.monotonic() - since)) + 0.1)
    out = []
    try:
        actors = {a["name"]: a for a in pipe.status()["actors"]}
    except (KeyError, ValueError, OSError) as exc:
        return [f"cannot tell whether strategy and risk received every replayed record: {exc}"]
    for actor in VERIFIED_ACTORS:
        counters = actors.get(actor, {}).get("counters")
        if counters is None:
            out.append(f"cannot tell whether {actor} received every replayed record")
            continue
        lost, gaps = counters.get("bus_lost", 0), counters.get("bus_gaps", 0)
        if lost or gaps:
            out.append(f"the replay pipeline's {actor} missed {lost} replayed messages "
                       f"({gaps} gaps): it could not keep up at this speed, so the "
                       "comparison is void; replay again with a lower --speed")
    return out


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
    sel = select_records(opts.target, topics, opts.from_ns, opts.to_ns)
    if not sel.records:
        raise ReplayError(f"nothing to replay: no record of {', '.join(topics)} in the window")
    records = sel.records
    notes: list[str] = []
    expected, intents = [], []
    first: list[Record] = []
    risk_day = None
    if opts.verify:
        expected = decode_decisions(r for r in records if r.topic.startswith("decision."))
        intents = decode_intents(r for r in records if r.topic.startswith("intent."))
        starts, notes = start_points(records)
        risk_day = recorded_risk_day(records, starts)
        first, records = verify_feed(records, starts)
        if base is not None:
            notes = config_differences(recording_meta(opts.target), base) + notes
    torn = {p: r for p, r in sel.reports.items() if r.torn_tail}
    # --verify: the recording carries the recorded executor's order/fill/portfolio
    # messages; the pipeline's executor mirrors them instead of adding its own (see
    # actors/executor/venues/mirror.py), and strategy and risk run on the recorded
    # inputs (replay.verify, see replay/verify.py). A plain replay keeps a normal
    # dry-run pipeline.
    extra: dict[str, Any] = {"executor": {"replay_mirror": opts.verify}}
    if opts.verify:
        extra["replay"] = {"verify": True}
        # A heartbeat after the feed tells whether anything was lost (lost_inputs): a
        # short interval keeps that wait short.
        extra["supervisor"] = {"heartbeat_interval_s": 0.25}
    pipe = IsolatedPipeline(base, record=opts.record, keep=opts.keep,
                            strategy=opts.strategy, risk=opts.risk, extra=extra,
                            strategy_boot=recorded_strategy_boot(opts.target, opts.from_ns,
                                                                 opts.to_ns))
    if risk_day is not None:
        # The recorded risk's daily-loss baseline (restored from its risk.day after a
        # restart, so not otherwise in the recording): the replayed one starts with it.
        try:
            rc = pipe.cfg.risk
            daybook.save(daybook.path_in(pipe.cfg.data_path),
                         TradingDay.named(rc.day_boundary_tz, rc.day_boundary_hour),
                         daybook.DayBaseline(*risk_day))
        except BaseException:
            pipe.stop()
            raise
    with pipe:
        collector = OutputCollector(pipe.cfg) if opts.verify else None
        client = BusClient(pipe.cfg)
        try:
            client.connect()
            reframer = Reframer()
            feed(client.publish_raw, [*first, *sel.primers], speed=None, reframer=reframer)
            wanted = progress_wanted() if opts.progress is None else opts.progress
            label = "replay --verify" if opts.verify else "replay"
            with progress(len(records), label, enabled=wanted) as bar:
                stats = feed(client.publish_raw, records, speed=opts.speed,
                             reframer=reframer, progress=reached(bar))
                reached(bar)(len(records))
            result = None
            if collector is not None:
                collector.settle(len(expected), len(intents), opts.settle_s,
                                 timeout_s=opts.settle_s + 30.0)
                result = compare_decisions(expected, collector.decisions, intents,
                                           collector.intents)
                result.notes = notes
                fed_until = time.monotonic()
                result.differences += lost_inputs(pipe, fed_until)
        finally:
            client.close()
            if collector is not None:
                collector.close()
    return ReplayOutcome(stats, len(sel.primers), torn, result, notes)
