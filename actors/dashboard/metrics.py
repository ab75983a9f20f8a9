"""Prometheus ``/metrics``: the status document and the bus model, as metric families.

Two sources, one registry of our own (not the process-global default):
- hop latency histograms, observed as messages arrive (``observe_hop``);
- everything else is read at scrape time from the latest status document and the bus
  model by a custom collector, so a figure here is the figure status shows.

Counters that come from actors' heartbeats restart at 0 when the actor restarts;
Prometheus' ``rate()`` treats that as a counter reset, which is what it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from actors.dashboard.model import BusModel
from actors.dashboard.statuswatch import LATCHES, StatusWatch, total_pnl
from shared import hops

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HOP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ORDER_OUTCOMES = ("submitted", "committed", "failed", "unknown")
HTTP_COUNTER = re.compile(r"^http_(\d{3})$")


class StatusCollector(Collector):
    def __init__(self, watch: StatusWatch, model: BusModel,
                 dashboard_counters: Callable[[], dict[str, int]]) -> None:
        self.watch, self.model = watch, model
        self.dashboard_counters = dashboard_counters

    def collect(self) -> Iterator[Metric]:
        doc = self.watch.doc
        up = GaugeMetricFamily("btcbot_status_up", "1 when the supervisor answered the "
                               "dashboard's last status poll")
        up.add_metric([], 0.0 if doc is None or self.watch.failures else 1.0)
        yield up
        yield from self._bus_model()
        yield from self._dashboard()
        if doc is None:
            return
        yield from self._trading(doc)
        yield from self._actors(doc)
        yield from self._orders_and_risk(doc)
        yield from self._pnl(doc)
        yield from self._bus_health(doc)

    def _trading(self, doc: dict[str, Any]) -> Iterator[Metric]:
        trading = GaugeMetricFamily("btcbot_trading", "1 when the supervisor says TRADING")
        trading.add_metric([], 1.0 if doc["trading"]["state"] == "TRADING" else 0.0)
        yield trading
        reasons = GaugeMetricFamily("btcbot_halt_reason", "1 per current reason not to trade",
                                    labels=["reason"])
        for r in doc["trading"]["reasons"]:
            reasons.add_metric([r], 1.0)
        yield reasons
        latch = GaugeMetricFamily("btcbot_latch", "1 when the latch is set, -1 unknown",
                                  labels=["latch"])
        for name in LATCHES:
            value = doc.get("latch", {}).get(name)
            latch.add_metric([name], -1.0 if value is None else float(bool(value)))
        yield latch
        keys = GaugeMetricFamily("btcbot_idempotency_keys", "idempotency keys by status",
                                 labels=["status"])
        for k, v in (doc.get("idempotency") or {}).items():
            if isinstance(v, int):
                keys.add_metric([k], float(v))
        yield keys

    def _actors(self, doc: dict[str, Any]) -> Iterator[Metric]:
        ready = GaugeMetricFamily("btcbot_actor_ready", "1 when running and READY",
                                  labels=["actor"])
        state = GaugeMetricFamily("btcbot_actor_state", "1 for the actor's current state",
                                  labels=["actor", "state"])
        restarts = CounterMetricFamily("btcbot_actor_restarts", "restarts by the supervisor",
                                       labels=["actor"])
        cpu = GaugeMetricFamily("btcbot_actor_cpu_percent", "CPU % of one core",
                                labels=["actor"])
        rss = GaugeMetricFamily("btcbot_actor_rss_bytes", "resident memory", labels=["actor"])
        hb = GaugeMetricFamily("btcbot_actor_heartbeat_age_seconds", "since the last heartbeat",
                               labels=["actor"])
        gaps = CounterMetricFamily("btcbot_bus_gaps", "sequence gaps seen by the actor's "
                                   "subscriber", labels=["actor"])
        lost = CounterMetricFamily("btcbot_bus_lost", "messages missing inside gaps",
                                   labels=["actor"])
        malformed = CounterMetricFamily("btcbot_bus_malformed", "undecodable frames dropped",
                                        labels=["actor"])
        http = CounterMetricFamily("btcbot_exchange_http_responses", "exchange HTTP answers "
                                   "by status code, as the actor counts them",
                                   labels=["actor", "code"])
        for a in doc.get("actors", []):
            name, c = a["name"], a.get("counters", {})
            ready.add_metric([name], 1.0 if a["ready"] else 0.0)
            state.add_metric([name, a["state"]], 1.0)
            restarts.add_metric([name], float(a["restarts"]))
            if a["cpu_percent"] is not None:  # None: no process (BACKOFF, STOPPED)
                cpu.add_metric([name], float(a["cpu_percent"]))
            if a["rss_bytes"] is not None:
                rss.add_metric([name], float(a["rss_bytes"]))
            if a["heartbeat_age_s"] is not None:
                hb.add_metric([name], float(a["heartbeat_age_s"]))
            if "bus_gaps" in c:
                gaps.add_metric([name], float(c["bus_gaps"]))
                lost.add_metric([name], float(c.get("bus_lost", 0)))
                malformed.add_metric([name], float(c.get("bus_malformed", 0)))
            for k, v in c.items():
                if m := HTTP_COUNTER.match(k):
                    http.add_metric([name, m.group(1)], float(v))
        yield from (ready, state, restarts, cpu, rss, hb, gaps, lost, malformed, http)

    def _orders_and_risk(self, doc: dict[str, Any]) -> Iterator[Metric]:
        actors = {a["name"]: a.get("counters", {}) for a in doc.get("actors", [])}
        orders = CounterMetricFamily("btcbot_orders", "executor order outcomes",
                                     labels=["outcome"])
        ex = actors.get("executor", {})
        for outcome in ORDER_OUTCOMES:
            if outcome in ex:
                orders.add_metric([outcome], float(ex[outcome]))
        yield orders
        risk = actors.get("risk", {})
        verdicts = CounterMetricFamily("btcbot_risk_decisions", "risk verdicts",
                                       labels=["verdict"])
        for verdict in ("approved", "resized", "rejected"):
            verdicts.add_metric([verdict], float(risk.get(verdict, 0)))
        yield verdicts
        reasons = CounterMetricFamily("btcbot_risk_reasons", "reason codes on risk decisions",
                                      labels=["reason"])
        for k, v in risk.items():
            if k.startswith("reason."):
                reasons.add_metric([k.removeprefix("reason.")], float(v))
        yield reasons

    def _pnl(self, doc: dict[str, Any]) -> Iterator[Metric]:
        pnl = GaugeMetricFamily("btcbot_pnl_try", "PnL in TRY as status reports it",
                                labels=["symbol", "part"])
        for row in doc.get("pnl", []):
            for part in ("realized", "unrealized", "fees", "net"):
                if row.get(part) is not None:  # "net" only from a supervisor that has it
                    pnl.add_metric([row["symbol"], part], float(Decimal(str(row[part]))))
        total = total_pnl(doc)
        if total is not None:
            for part, value in total.items():
                pnl.add_metric(["total", part], float(value))
        yield pnl
        position = GaugeMetricFamily("btcbot_position", "position in base units",
                                     labels=["symbol"])
        for row in doc.get("pnl", []):
            position.add_metric([row["symbol"]], float(Decimal(str(row["position"]))))
        yield position

    def _bus_health(self, doc: dict[str, Any]) -> Iterator[Metric]:
        """The supervisor's windowed figures (status ``bus_health``), as they are."""
        health = doc.get("bus_health")
        if not health:
            return
        q = GaugeMetricFamily("btcbot_bus_hop_latency_ms", "per-hop latency quantile over a "
                              "sliding window (the supervisor's bus health)",
                              labels=["hop", "window", "quantile"])
        rate = GaugeMetricFamily("btcbot_bus_hop_rate", "per-hop samples per second over a "
                                 "sliding window", labels=["hop", "window"])
        over = GaugeMetricFamily("btcbot_bus_hop_over_bound", "1 when the hop's last-minute "
                                 "p99 exceeds its configured bound", labels=["hop"])
        for h in health.get("hops", []):
            for window in health.get("windows_s", {}):
                w = h.get(window) or {}
                rate.add_metric([h["hop"], window], float(w.get("per_s", 0.0)))
                for name in ("p50", "p99"):
                    if w.get(f"{name}_ms") is not None:
                        q.add_metric([h["hop"], window, name], float(w[f"{name}_ms"]))
            over.add_metric([h["hop"]], 1.0 if h.get("over_bound") else 0.0)
        gaps = CounterMetricFamily("btcbot_bus_publisher_gaps", "holes in a publisher's "
                                   "sequences as the supervisor saw them",
                                   labels=["publisher"])
        for a in health.get("actors", []):
            gaps.add_metric([a["actor"]], float(a.get("gaps", 0)))
        yield from (q, rate, over, gaps)

    def _bus_model(self) -> Iterator[Metric]:
        msgs = CounterMetricFamily("btcbot_dashboard_bus_messages", "bus messages the "
                                   "dashboard received, by topic family", labels=["family"])
        for fam, n in sorted(self.model.messages.items()):
            msgs.add_metric([fam], float(n))
        yield msgs

    def _dashboard(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("btcbot_dashboard_events", "the dashboard's own counters",
                                  labels=["event"])
        for k, v in sorted(self.dashboard_counters().items()):
            fam.add_metric([k], float(v))
        yield fam


class Metrics:
    def __init__(self, watch: StatusWatch, model: BusModel,
                 dashboard_counters: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.hop = Histogram("btcbot_hop_latency_seconds", "per-hop latency from envelope "
                             "stamps", labelnames=["hop"], buckets=HOP_BUCKETS,
                             registry=self.registry)
        # every hop present from the first scrape, even with no sample
        for hop in (*hops.PIPELINE, hops.transit("dashboard")):
            self.hop.labels(hop=hop)
        self.registry.register(StatusCollector(watch, model, dashboard_counters))

    def observe_hop(self, hop: str, seconds: float) -> None:
        self.hop.labels(hop=hop).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
