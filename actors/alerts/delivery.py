"""Webhook delivery: one bounded queue and one worker per webhook, retries with
exponential backoff, and counters for status. Enqueueing never waits: a full queue
drops its oldest event (counted), so a dead receiver costs memory bounded by
``queue_max`` and nothing else. An event is dropped (counted) after ``max_attempts``."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import aiohttp
from loguru import logger

from actors.alerts.events import AlertEvent
from actors.alerts.format import body_for
from shared.config import AlertsConfig, WebhookConfig


def backoff_s(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (1 = the first retry): exponential, capped, with
    ±20 % jitter so that several bots do not hammer a recovering receiver in step."""
    return min(cap, initial * 2 ** (attempt - 1)) * rng.uniform(0.8, 1.2)


@dataclass
class _Hook:
    index: int
    cfg: WebhookConfig
    queue: deque[AlertEvent] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: str = ""


class Deliverer:
    def __init__(self, cfg: AlertsConfig, mode: str) -> None:
        self.cfg = cfg
        self.mode = mode
        self.hooks = [_Hook(i, h) for i, h in enumerate(cfg.webhooks)]
        self.counters: Counter[str] = Counter()
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None

    def enqueue(self, event: AlertEvent) -> None:
        self.counters["alerts_events"] += 1
        for hook in self.hooks:
            if len(hook.queue) >= self.cfg.queue_max:
                hook.queue.popleft()
                self.counters["alerts_dropped"] += 1
            hook.queue.append(event)
            hook.wake.set()

    @property
    def pending(self) -> int:
        return sum(len(h.queue) for h in self.hooks)

    def last_error(self) -> str:
        return "; ".join(f"webhook[{h.index}]: {h.last_error}" for h in self.hooks
                         if h.last_error)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            self._session = session
            await asyncio.gather(*(self._worker(h) for h in self.hooks))

    async def _worker(self, hook: _Hook) -> None:
        while True:
            while not hook.queue:
                hook.wake.clear()
                await hook.wake.wait()
            event = hook.queue[0]
            attempt = 0
            while True:
                attempt += 1
                error = await self._post(hook, event)
                if error is None:
                    self.counters["alerts_sent"] += 1
                    hook.last_error = ""
                    break
                self.counters["alerts_failed"] += 1  # failed delivery attempts
                hook.last_error = f"{error} at {time.strftime('%H:%M:%S')}"
                if attempt >= self.cfg.max_attempts:
                    self.counters["alerts_dropped"] += 1
                    logger.error("alert {} to webhook[{}] dropped after {} attempts: {}",
                                 event.kind, hook.index, attempt, error)
                    break
                delay = backoff_s(attempt, self.cfg.backoff_initial_s, self.cfg.backoff_max_s,
                                  self._rng)
                logger.warning("alert {} to webhook[{}] failed ({}); retry {} in {:.1f}s",
                               event.kind, hook.index, error, attempt, delay)
                await asyncio.sleep(delay)
            if hook.queue and hook.queue[0] is event:
                hook.queue.popleft()

    async def _post(self, hook: _Hook, event: AlertEvent) -> str | None:
        """None on a 2xx answer, else why not (the URL is never logged: it may hold a
        bot token)."""
        assert self._session is not None
        try:
            async with self._session.post(
                    hook.cfg.url, data=body_for(hook.cfg, event, self.mode),
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=hook.cfg.timeout_s)) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__
