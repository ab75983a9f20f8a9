"""The client's rate windows across restarts (the journal) and after a 429 (Retry-After)."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.btcturk.client import BtcTurkClient
from shared.btcturk.errors import RetryableError
from shared.btcturk.ratejournal import RateJournal
from shared.btcturk.ratelimit import RateLimiter
from tests.sim_fixtures import start_sim_process

LIMITS = {"g": [(3, 1.0), (5, 60.0)], "h": [(2, 60.0)]}


class Wall:
    """A wall clock the test moves (seconds)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _blocks(limiter: RateLimiter, group: str) -> bool:
    """True when the next request of ``group`` has to wait (it would go over a window)."""
    try:
        await asyncio.wait_for(limiter.acquire(group), 0.05)
    except TimeoutError:
        return True
    return False


def test_journal_keeps_the_last_sends_per_group_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j"
    first = RateJournal(path, "acct", LIMITS)
    assert first.load() == {}
    for i in range(7):  # the ring holds max(capacity) = 5: the two oldest go
        first.record("g", 100.0 + i)
    first.record("h", 50.0)
    first.block("h", 130.0)
    first.close()  # a SIGKILL closes nothing: the writes are already in the file
    loaded = RateJournal(path, "acct", LIMITS).load()
    assert loaded["g"] == (0.0, [102.0, 103.0, 104.0, 105.0, 106.0])
    assert loaded["h"] == (130.0, [50.0])


def test_journal_of_another_account_or_table_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = RateJournal(path, "acct", LIMITS)
    j.load()
    j.record("g", 1.0)
    j.close()
    other = RateJournal(path, "other-acct", LIMITS)
    assert other.load() == {} and other.reset_reason
    other.close()
    resized = RateJournal(path, "other-acct", {"g": [(9, 1.0)]})
    assert resized.load() == {} and "size" in (resized.reset_reason or "")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=500.0), min_size=0, max_size=40))
def test_ring_continues_at_its_oldest_slot(tmp_path_factory: pytest.TempPathFactory,
                                           gaps: list[float]) -> None:
    """Whatever was written, and however often the process restarted in between, the
    journal holds exactly the latest max(capacity) sends."""
    path = tmp_path_factory.mktemp("ring") / "j"
    t, sent = 1.0, []
    for i, gap in enumerate(gaps):
        if i % 6 == 0:  # a restart every few sends
            j = RateJournal(path, "acct", LIMITS)
            j.load()
        t += gap + 0.001
        j.record("g", t)
        sent.append(t)
    loaded = RateJournal(path, "acct", LIMITS).load()
    assert loaded.get("g", (0.0, []))[1] == sent[-5:]


def test_a_restarted_limiter_continues_the_previous_runs_windows(tmp_path: Path) -> None:
    wall = Wall()

    async def run() -> tuple[bool, bool, bool]:
        before = RateLimiter(LIMITS, journal=RateJournal(tmp_path / "j", "a", LIMITS), wall=wall)
        for _ in range(2):
            await before.acquire("h")  # h: 2 a minute, both spent
        await before.acquire("g")
        # SIGKILL; the next process starts 10 s later
        wall.t += 10.0
        after = RateLimiter(LIMITS, journal=RateJournal(tmp_path / "j", "a", LIMITS), wall=wall)
        h_full = await _blocks(after, "h")
        g_has_room = not await _blocks(after, "g")
        # A fresh file (no memory) would let h through: the windows are not a default.
        fresh = RateLimiter(LIMITS, journal=RateJournal(tmp_path / "k", "a", LIMITS), wall=wall)
        return h_full, g_has_room, not await _blocks(fresh, "h")

    assert asyncio.run(run()) == (True, True, True)


def test_old_sends_and_a_backwards_wall_clock(tmp_path: Path) -> None:
    wall = Wall()

    async def run() -> tuple[bool, bool]:
        j = RateJournal(tmp_path / "j", "a", LIMITS)
        j.load()
        j.record("h", wall.t - 61.0)  # older than the window: free again
        j.record("h", wall.t - 61.0)
        j.close()
        aged = RateLimiter(LIMITS, journal=RateJournal(tmp_path / "j", "a", LIMITS), wall=wall)
        ok = not await _blocks(aged, "h")
        j = RateJournal(tmp_path / "k", "a", LIMITS)
        j.load()
        j.record("h", wall.t + 3600.0)  # stamped in our future: the clock stepped back
        j.record("h", wall.t + 3600.0)
        j.close()
        future = RateLimiter(LIMITS, journal=RateJournal(tmp_path / "k", "a", LIMITS), wall=wall)
        return ok, await _blocks(future, "h")

    assert asyncio.run(run()) == (True, True)


def test_a_429_blocks_the_whole_group_and_the_block_survives_a_restart(tmp_path: Path) -> None:
    wall = Wall()

    async def run() -> tuple[bool, bool, bool]:
        limiter = RateLimiter(LIMITS, journal=RateJournal(tmp_path / "j", "a", LIMITS), wall=wall)
        await limiter.acquire("g")
        limiter.block("g", 30.0)  # Retry-After: 30
        blocked = await _blocks(limiter, "g")
        other_free = not await _blocks(limiter, "h")
        wall.t += 5.0
        again = RateLimiter(LIMITS, journal=RateJournal(tmp_path / "j", "a", LIMITS), wall=wall)
        return blocked, other_free, await _blocks(again, "g")

    assert asyncio.run(run()) == (True, True, True)


def test_client_honours_retry_after_for_the_whole_group() -> None:
    """Against the simulator's real limits (10 orders/s): a client that believes it may
    send 100 a second gets one 429, then holds every later submit until Retry-After
    instead of collecting a 429 per request. The old client got one per request."""
    sim = start_sim_process(rate_limits=True)
    try:
        async def go() -> tuple[int, int, int]:
            client = BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret,
                                   rate_limits={"order_submit": [(100, 1.0)]})
            accepted = 0
            ids = itertools.count()
            try:
                for _ in range(15):
                    try:
                        await client.submit_order("BTCTRY", "buy", "limit", Decimal("0.0001"),
                                                  Decimal("3000000"), f"t{next(ids)}")
                        accepted += 1
                    except RetryableError as exc:
                        assert exc.kind == "rate_limited" and exc.retry_after_s
            finally:
                await client.close()
            return accepted, client.rate_limited, client.rate_waits

        sim.reset({"TRY": "1000000"})
        accepted, limited, waits = asyncio.run(go())
        assert (limited, accepted) == (1, 14) and waits >= 1
        assert sim.state()["rate_limited"] == 1
    finally:
        sim.stop()


def test_an_unusable_journal_is_reported_and_pacing_goes_on(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()  # a directory where the file should be
    journal = RateJournal(tmp_path / "j", "a", LIMITS)

    async def run() -> bool:
        limiter = RateLimiter(LIMITS, journal=journal, wall=Wall())
        for _ in range(2):
            await limiter.acquire("h")
        return await _blocks(limiter, "h")  # still paced within the run

    assert asyncio.run(run()) and journal.open_error and "IsADirectoryError" in journal.open_error
