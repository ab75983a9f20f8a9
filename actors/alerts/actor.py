"""The alerts actor: watches the bus for what an operator must hear about and posts it
to the configured webhooks (``[alerts]``).

Its own process, supervised like the others, because delivery is slow, remote and
fallible: a hung receiver or a DNS stall must never sit in the supervisor's control
loop or anywhere near the order path. It is an observer (``OBSERVER_ACTORS``): it being
down never halts trading, and the supervisor giving up on it does not set the kill
switch. Its counters (events, sent, failed attempts, dropped, pending) ride on its
heartbeat into ``status``."""

from __future__ import annotations

import asyncio
import time

from loguru import logger

from actors.alerts.delivery import Deliverer
from actors.alerts.events import Detector, Reachability
from actors.runtime import Actor, main_for
from bus.messages import AlertsInfo, Packet
from shared.btcturk.client import BtcTurkClient
from shared.btcturk.errors import BtcTurkError
from shared.config import Config


class AlertsActor(Actor):
    name = "alerts"
    subscriptions = ("hb.executor", "state.", "reconcile.report", "decision.", "fill.")

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.detector = Detector(on_fill=cfg.alerts.on_fill, repeat_s=cfg.alerts.repeat_s)
        self.deliverer = Deliverer(cfg.alerts, cfg.mode)
        self.reachability = Reachability(cfg.alerts.exchange_probe_failures)

    async def setup(self) -> None:
        self.spawn(self.deliverer.run(), "deliver")
        if self.cfg.alerts.exchange_probe_s > 0 and self.cfg.mode != "dry-run":
            self.spawn(self._probe_exchange(), "probe")
        logger.info("alerts: {} webhook(s), on_fill={}", len(self.deliverer.hooks),
                    self.cfg.alerts.on_fill)

    async def on_message(self, topic: str, packet: Packet) -> None:
        for event in self.detector.observe(packet.body, time.time()):
            logger.info("alert {} ({}): {}", event.kind, event.severity, event.summary)
            self.deliverer.enqueue(event)

    async def _probe_exchange(self) -> None:
        """GET the exchange's public server time every ``exchange_probe_s``: an outage is
        heard even when no actor reports it (public, unsigned, one request per probe)."""
        url = self.cfg.rest_url
        client = BtcTurkClient(url, timeout_s=min(5.0, self.cfg.alerts.exchange_probe_s),
                               read_attempts=1, rate_limits=False)
        try:
            while True:
                try:
                    await client.server_time()
                    error = None
                except BtcTurkError as exc:
                    error = f"{exc.kind}: {exc.message}"
                    self.counters["exchange_probe_failed"] += 1
                for event in self.reachability.observe(error, time.time(), url):
                    logger.info("alert {} ({}): {}", event.kind, event.severity, event.summary)
                    self.deliverer.enqueue(event)
                await asyncio.sleep(self.cfg.alerts.exchange_probe_s)
        finally:
            await client.close()

    def heartbeat_counters(self) -> dict[str, int]:
        return {**self.deliverer.counters, "alerts_pending": self.deliverer.pending}

    def heartbeat_info(self) -> AlertsInfo:
        return AlertsInfo(last_error=self.deliverer.last_error()[:500])


def main() -> None:
    main_for(AlertsActor)
