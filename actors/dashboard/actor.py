"""The dashboard actor: a web dashboard and Prometheus metrics for the operator.

It reads; its only writes are operator commands. It subscribes to the bus like the
recorder (books, intents, decisions, orders, fills, feed status) and polls the
supervisor's status the way ``btcbot-supervisor status --json`` gets it (the same
request on the same control socket, ``bus.control``), so every figure it shows is
the supervisor's. Operator commands go the way the CLI sends them.

An observer must never stop trading: a port it cannot bind leaves it running in
ERROR_RETRYABLE with the reason in its heartbeat, retrying, instead of exiting (a
crash loop would end with the supervisor setting the kill switch). It runs at a lower
CPU priority (nice 10), off the tick-to-order path.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

from aiohttp import web
from loguru import logger

from actors.dashboard.access import load_or_create_token
from actors.dashboard.audit import AuditLog
from actors.dashboard.equitylog import EquityLog
from actors.dashboard.metrics import Metrics
from actors.dashboard.model import BusModel
from actors.dashboard.statuswatch import StatusWatch
from actors.dashboard.web import Hub, build_app
from actors.runtime import Actor, main_for
from bus.control import fetch_status, supervisor_request
from bus.messages import Ack, Control, DashboardInfo, Packet
from shared.fsm import State
from shared.tradingday import TradingDay

BIND_RETRY_S = 5.0
WHY_TIMEOUT_S = 30.0
WHY_MAX_CHARS = 200_000


class DashboardActor(Actor):
    name = "dashboard"
    subscriptions = ("md.book.", "md.status", "intent.", "decision.", "order.", "fill.")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        d = self.cfg.dashboard
        self.web_counters: Counter[str] = Counter()
        risk = self.cfg.risk
        self.day_log = EquityLog(self.cfg.path(self.cfg.data_dir) / d.equity_file,
                                 TradingDay.named(risk.day_boundary_tz, risk.day_boundary_hour))
        self.watch = StatusWatch(points=d.history_points, day_log=self.day_log)
        self.model = BusModel(points=d.history_points, rows=d.history_rows,
                              on_hop=self._on_hop)
        self.metrics = Metrics(self.watch, self.model, lambda: dict(self.web_counters))
        self.hub: Hub | None = None
        self.runner: web.AppRunner | None = None
        self.bind_error = ""
        self._why_lock = asyncio.Lock()

    def _on_hop(self, hop: str, seconds: float) -> None:
        self.metrics.observe_hop(hop, seconds)

    async def setup(self) -> None:
        d = self.cfg.dashboard
        data = self.cfg.path(self.cfg.data_dir)
        token = load_or_create_token(data / d.token_file)
        self.day_log.load(time.time())
        risk = self.cfg.risk
        self.hub = Hub(token=token, watch=self.watch, model=self.model, metrics=self.metrics,
                       audit=AuditLog(data / d.audit_file), send=self._send_command,
                       explain=self._why,
                       limits={"max_daily_loss_try": str(risk.max_daily_loss_try)},
                       counters=self.web_counters)
        # Open event streams never end by themselves: on stop, give them a second, not
        # aiohttp's default minute (the runtime allows teardown five).
        self.runner = web.AppRunner(build_app(self.hub), access_log=None,
                                    handler_cancellation=True, shutdown_timeout=1.0)
        await self.runner.setup()
        if not await self._bind():
            self.fsm.to(State.ERROR_RETRYABLE, self.bind_error[:200])
            self.spawn(self._rebind_loop(), "rebind")
        self.spawn(self._poll_status(), "status")

    async def _bind(self) -> bool:
        assert self.runner is not None
        d = self.cfg.dashboard
        site = web.TCPSite(self.runner, d.host, d.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            self.bind_error = f"cannot listen on {d.host}:{d.port}: {exc.strerror or exc}"
            logger.error("dashboard: {}; retrying every {:.0f}s", self.bind_error, BIND_RETRY_S)
            return False
        self.bind_error = ""
        logger.info("dashboard: http://{}:{}/ (run `btcbot-supervisor dashboard` for the "
                    "URL with its token)", d.host, d.port)
        return True

    async def _rebind_loop(self) -> None:
        while True:
            await asyncio.sleep(BIND_RETRY_S)
            if await self._bind():
                self.fsm.to(State.READY, "listening")
                return

    async def _poll_status(self) -> None:
        d = self.cfg.dashboard
        assert self.hub is not None
        while True:
            started = time.monotonic()
            doc = await fetch_status(self.ctx, self.cfg.supervisor_endpoint, auth=self.auth,
                                     server=self.cfg.identity("supervisor"),
                                     timeout_s=2.0)
            self.watch.update(doc)
            self.counters["status_polls" if doc is not None else "status_poll_failures"] += 1
            await self.hub.notify()
            # Poll fast only while someone watches; otherwise just often enough that a
            # Prometheus scrape is not stale.
            interval = d.status_interval_s if self.hub.clients else d.idle_status_interval_s
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _send_command(self, command: str, value: bool, reason: str) -> str:
        reply = await supervisor_request(self.ctx, self.cfg.supervisor_endpoint, command,
                                         server=self.cfg.identity("supervisor"),
                                         auth=self.auth, timeout_s=30.0, value=value,
                                         reason=reason)
        return reply.detail if isinstance(reply, Ack) else "ok"

    async def _why(self, ident: str) -> tuple[bool, str]:
        """``btcbot-supervisor why ID``, run as the operator would: the story comes from
        the DB and the recordings, which only that command reads (one at a time)."""
        async with self._why_lock:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "actors.supervisor", "--config", self.cfg.source_path,
                "why", ident, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                cwd=self.cfg.base_dir)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), WHY_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return False, f"why {ident}: no answer within {WHY_TIMEOUT_S:.0f}s"
        text = out.decode(errors="replace")[:WHY_MAX_CHARS]
        return proc.returncode == 0, text

    async def on_message(self, topic: str, packet: Packet) -> None:
        self.model.apply(topic, packet, time.monotonic_ns())

    async def on_control(self, control: Control) -> None:
        # A pause is for trading actors; the dashboard keeps showing (and obeys shutdown).
        if control.command == "shutdown":
            self.stop()

    async def teardown(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def heartbeat_counters(self) -> dict[str, int]:
        return {**self.web_counters, "clients": self.hub.clients if self.hub else 0,
                "equity_log_errors": self.day_log.errors}

    def heartbeat_info(self) -> DashboardInfo:
        d = self.cfg.dashboard
        return DashboardInfo(url=f"http://{d.host}:{d.port}/", bind_error=self.bind_error)


def main() -> None:
    main_for(DashboardActor)


if __name__ == "__main__":
    main()
