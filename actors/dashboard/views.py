"""Each page as data: a list of cards (key/value lists, tables, charts, banners),
built from the status document and the bus model (pure, no I/O).

The same view is rendered to HTML by the templates (first paint, works without
JavaScript) and sent as JSON over server-sent events (live updates). Every string in
a view is plain text: the template escapes it, the page script sets it with
``textContent``; nothing from the bus ever becomes markup.
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from actors.dashboard.model import BusModel
from actors.dashboard.statuswatch import LATCHES, StatusWatch, total_pnl

PAGES = (("overview", "Overview"), ("actors", "Actors"), ("markets", "Markets"),
         ("positions", "Positions & PnL"), ("orders", "Orders & fills"),
         ("decisions", "Decisions"), ("bus", "Bus health"))
PAGE_NAMES = frozenset(p for p, _ in PAGES)

Card = dict[str, Any]
Cell = str | dict[str, str]

REASON_WORDS = {
    "gate:kill_switch": "The kill switch is on: no new orders.",
    "gate:safe_mode": "Safe mode is on: observe only.",
    "gate:safety_latch": "The reconciler's safety latch is set: an operator must clear it.",
    "gate:paused": "Trading is paused by an operator.",
    "gate:live_not_armed": "Live mode is not armed (gates, acknowledgement or credentials).",
}


def reason_in_words(code: str) -> str:
    if code in REASON_WORDS:
        return REASON_WORDS[code]
    if code.startswith("market_data:stale"):
        return f"Market data is stale for {code.partition(' ')[2] or 'some symbols'}."
    if code.startswith("actor:"):
        _, name, state = (code.split(":", 2) + ["", ""])[:3]
        return f"Actor {name} is {state}, not ready."
    if code.startswith("executor:halted"):
        return f"The executor halted submits {code.partition(' ')[2] or ''}".rstrip() + "."
    if code.startswith("warn:bus:slow hop "):
        return (f"Warning, trading goes on: a bus hop is slower than its bound "
                f"({code.removeprefix('warn:bus:slow hop ')}).")
    if code.startswith("mode:dry-run"):
        return "Dry-run mode: fills are simulated, nothing reaches an exchange."
    return code


# --- formatting ------------------------------------------------------------------------
def dec(value: Any) -> str:
    """A money figure as plain digits (never ``0E-8``)."""
    if value is None or value == "":
        return "-"
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return format(d.normalize() if d == d.to_integral() else d, "f")


def clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(wall)) if wall else "-"


def age(seconds: Any) -> str:
    return "-" if seconds is None else f"{float(seconds):.1f}s"


def duration(seconds: Any) -> str:
    if not seconds:
        return "-"
    s = int(float(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def kv(card_id: str, title: str, items: list[tuple[str, str]] | list[tuple[str, str, str]]
       ) -> Card:
    return {"id": card_id, "kind": "kv", "title": title,
            "items": [{"k": i[0], "v": i[1], "c": i[2] if len(i) > 2 else ""} for i in items]}


def table(card_id: str, title: str, columns: list[str], rows: list[list[Cell]], *,
          filterable: bool = False, empty: str = "nothing yet") -> Card:
    return {"id": card_id, "kind": "table", "title": title, "columns": columns, "rows": rows,
            "filterable": filterable, "empty": empty}


def link(text: str, href: str) -> dict[str, str]:
    return {"t": text, "href": href}


def side(s: str) -> dict[str, str]:
    return cls(s, "buy" if s == "buy" else "sell")


def order_href(coid: str) -> str:
    return "/order/" + quote(coid, safe="")


def why_href(ident: str) -> str:
    return "/why/" + quote(ident, safe="")


def cls(text: str, css: str) -> dict[str, str]:
    return {"t": text, "c": css}


# --- pages -------------------------------------------------------------------------------
def build(page: str, watch: StatusWatch, model: BusModel, limits: dict[str, str],
          now_mono: float) -> dict[str, Any]:
    doc = watch.doc or {}
    builders = {"overview": _overview, "actors": _actors, "markets": _markets,
                "positions": _positions, "orders": _orders, "decisions": _decisions,
                "bus": _bus}
    cards = builders[page](doc, watch, model, limits, now_mono)
    return {"page": page, "header": header(watch), "cards": cards}


def header(watch: StatusWatch) -> dict[str, str]:
    doc = watch.doc
    if doc is None or watch.failures >= 3:
        why = "supervisor not answering" if watch.failures else "waiting for the supervisor"
        return {"state": "UNKNOWN", "c": "bad", "detail": why, "mode": "-"}
    state = doc["trading"]["state"]
    return {"state": state, "c": "good" if state == "TRADING" else "bad",
            "detail": f"status {age(watch.age_s)} old", "mode": doc.get("mode", "-")}


def _overview(doc: dict[str, Any], watch: StatusWatch, model: BusModel,
              limits: dict[str, str], now_mono: float) -> list[Card]:
    cards: list[Card] = []
    trading = doc.get("trading") or {"state": "UNKNOWN", "reasons": ["no status yet"]}
    reasons = trading["reasons"] or []
    cards.append({"id": "state", "kind": "banner", "title": "Trading",
                  "state": trading["state"], "c": "good" if trading["state"] == "TRADING"
                  else "bad",
                  "lines": [f"{reason_in_words(r)} ({r})" for r in reasons]
                  or ["Every gate is open and every actor is ready."]})
    latch = doc.get("latch") or {}
    rows: list[list[Cell]] = []
    for name in LATCHES:
        on = latch.get(name)
        # The executor's DB says when a latch was set; a latch it has no time for (the
        # config's kill switch, an older executor) shows when the dashboard first saw it.
        set_at = (latch.get("set_at") or {}).get(name)
        seen = watch.latch_since.get(name)
        when = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(set_at)) if set_at and on else
                clock(seen) + " (seen by the dashboard)" if seen else "-")
        rows.append([name.replace("_", " "),
                     cls("unknown" if on is None else "SET" if on else "clear",
                         "bad" if on or on is None else "good"),
                     when,
                     latch.get("reason", "") if on else ""])
    if latch.get("supervisor_kill_switch"):
        rows.append(["supervisor kill switch", cls("SET", "bad"), "-",
                     latch["supervisor_kill_switch"]])
    cards.append(table("latches", "Latches", ["latch", "state", "set at (UTC)", "reason"],
                       rows))
    cards.append(kv("exchange", "Exchange", _exchange_items(doc, model)))
    cards.append(kv("recorder", "Recorder", _recorder_items(doc)))
    cards.append(kv("pnl", "PnL and daily-loss budget", _pnl_items(doc, limits)))
    cards.append({"id": "controls", "kind": "controls", "title": "Operator controls",
                  "buttons": [["pause", "Pause"], ["resume", "Resume"],
                              ["kill_switch_on", "Kill switch ON"],
                              ["kill_switch_off", "Kill switch off"],
                              ["latch_clear", "Clear safety latch"]]})
    return cards


def _actor(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((a for a in doc.get("actors", []) if a["name"] == name), None)


def _exchange_items(doc: dict[str, Any], model: BusModel) -> list[tuple[str, str, str]]:
    ex = doc.get("exchange") or {}
    items: list[tuple[str, str, str]] = [("kind", str(ex.get("kind", "-")), ""),
                                         ("url", str(ex.get("url") or "-"), "")]
    if "reachable" in ex:  # the supervisor's own verdict, when it has one
        items.append(("reachable", "yes" if ex["reachable"] else f"NO {ex.get('reason', '')}",
                      "good" if ex["reachable"] else "bad"))
    latch = doc.get("latch") or {}
    if "executor_halt" in latch:  # the executor's own verdict: exchange unreachable, disk
        halt = latch["executor_halt"]
        items.append(("submits", f"HALTED: {halt}" if halt else "allowed",
                      "bad" if halt else "good"))
    ex_actor = _actor(doc, "executor")
    if ex_actor is not None:  # the one actor that talks to the exchange with our keys
        ok = ex_actor["ready"] and ex_actor["state"] in ("READY", "EVALUATING", "EXECUTING")
        items.append(("executor", ex_actor["state"], "good" if ok else "bad"))
    sim = _actor(doc, "exchange-sim")
    if sim is not None:
        ok = sim["ready"]
        items.append(("simulator", f"{sim['state']} (answers HTTP: {'yes' if ok else 'no'})",
                      "good" if ok else "bad"))
    market = (doc.get("gates") or {}).get("market_data") or {}
    for sym, fresh in market.items():
        items.append((f"feed {sym}", "fresh" if fresh else "STALE", "good" if fresh else "bad"))
    return items


def _mb(n: Any) -> str:
    return "-" if n is None else f"{int(n) / 1e6:,.1f} MB"


def _recorder_items(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    rec = _actor(doc, "recorder")
    if rec is None:
        return [("recorder", "not in this pipeline", "bad")]
    c = rec.get("counters", {})
    items: list[tuple[str, str, str]] = [("actor", rec["state"],
                                          "good" if rec["ready"] else "bad")]
    r = doc.get("recordings")
    if r:  # the supervisor's reading of the recorder's own figures
        items += [("recording", "yes" if r["recording"] else f"NO: {r['reason']}",
                   "good" if r["recording"] else "bad"),
                  ("size", f"{_mb(r['bytes'])} in {r['segments']} segments", ""),
                  ("oldest record", str(r.get("oldest_record") or "-"), ""),
                  ("disk free", _mb(r["free_bytes"]) + (f" — {r['warning']}" if r["disk_low"]
                                                        else ""),
                   "bad" if r["disk_low"] else ""),
                  ("dropped / write errors", f"{r['dropped']} / {r['write_errors']}",
                   "bad" if r["dropped"] or r["write_errors"] else "")]
    items += [("records this run", str(c.get("records", "-")), ""),
              ("flush lag", f"{c.get('flush_lag_ms', '-')} ms", ""),
              ("segment", rec.get("info", {}).get("segment", "-"), "")]
    return items


def _pnl_items(doc: dict[str, Any], limits: dict[str, str]) -> list[tuple[str, str, str]]:
    total = total_pnl(doc)
    items: list[tuple[str, str, str]] = []
    if total is None:
        items.append(("net PnL", "no PnL reported yet", ""))
    else:
        net = total["net"]
        items += [("net PnL (TRY)", dec(net), "good" if net >= 0 else "bad"),
                  ("realized", dec(total["realized"]), ""),
                  ("unrealized", dec(total["unrealized"]), ""),
                  ("fees", dec(total["fees"]), "")]
    risk = _actor(doc, "risk")
    info = (risk or {}).get("info", {})
    limit = info.get("max_daily_loss") or limits.get("max_daily_loss_try", "")
    if "daily_loss" in info and limit:
        loss = Decimal(info["daily_loss"])  # risk's own count: realised loss today (UTC)
        left = Decimal(limit) - max(Decimal(0), loss)
        items += [("today's realized PnL (risk's count)", dec(-loss),
                   "good" if loss <= 0 else "bad"),
                  ("daily-loss budget left", f"{dec(left)} of {dec(limit)}",
                   "good" if left > 0 else "bad")]
    else:
        items.append(("daily-loss limit", f"{dec(limit)} (risk has not reported its count)",
                      ""))
    return items


def _actors(doc: dict[str, Any], watch: StatusWatch, model: BusModel,
            limits: dict[str, str], now_mono: float) -> list[Card]:
    rows: list[list[Cell]] = []
    counters: list[list[Cell]] = []
    for a in doc.get("actors", []):
        ok = a["ready"]
        rows.append([a["name"], cls(a["state"], "good" if ok else "bad"),
                     str(a["pid"] or "-"), str(a["restarts"]), duration(a["uptime_s"]),
                     age(a["heartbeat_age_s"]),
                     "-" if a["cpu_percent"] is None else f"{a['cpu_percent']:.1f}",
                     f"{a['rss_bytes'] / 1e6:.1f}" if a["rss_bytes"] else "-",
                     a.get("last_exit") or ""])
        for k, v in sorted(a.get("counters", {}).items()):
            counters.append([a["name"], k, str(v)])
    return [table("actors", "Actors (the supervisor's view)",
                  ["actor", "state", "pid", "restarts", "uptime", "hb age", "cpu %", "rss MB",
                   "last exit"], rows),
            table("counters", "Counters", ["actor", "counter", "value"], counters,
                  filterable=True)]


def _markets(doc: dict[str, Any], watch: StatusWatch, model: BusModel,
             limits: dict[str, str], now_mono: float) -> list[Card]:
    cards: list[Card] = []
    symbols = sorted(set(model.books) | set(model.feed))
    rows: list[list[Cell]] = []
    for sym in symbols:
        b = model.books.get(sym)
        f = model.feed.get(sym)
        spread = "-"
        if b is not None and b.bid and b.ask:
            spread = f"{(b.ask - b.bid) / ((b.ask + b.bid) / 2) * 10000:.1f} bps"
        fresh = "-" if f is None else "fresh" if f.fresh else f"STALE {f.reason}"
        rows.append([sym, dec(b.bid) if b else "-", dec(b.ask) if b else "-", spread,
                     f"{b.age_ms} ms" if b else "-", b.source if b else "-",
                     cls(fresh, "good" if f is not None and f.fresh else "bad")])
    cards.append(table("books", "Best bid / ask", ["symbol", "bid", "ask", "spread",
                                                   "book age", "source", "feed"], rows))
    for sym in symbols:
        cards.append(_market_chart(sym, model))
    return cards


def _market_chart(sym: str, model: BusModel) -> Card:
    """A mid-price line with our orders and fills as points at their prices. uPlot
    wants one shared x axis, so marks are merged into it with nulls elsewhere."""
    series = model.mids.get(sym)
    mids = list(zip(series.t, series.v, strict=True)) if series else []
    marks = {"buy order": [], "sell order": [], "fill": []}  # type: dict[str, list[tuple[float, float]]]
    for t, price, side in model.order_marks.get(sym, ()):
        marks[f"{side} order"].append((t, price))
    for t, price, _side in model.fill_marks.get(sym, ()):
        marks["fill"].append((t, price))
    start = mids[0][0] if mids else 0.0
    points: dict[float, list[float | None]] = {}
    names = ["mid", *marks]
    for t, v in mids:
        points.setdefault(t, [None] * len(names))[0] = v
    for i, name in enumerate(marks, start=1):
        for t, price in marks[name]:
            if t >= start:
                points.setdefault(t, [None] * len(names))[i] = price
    xs = sorted(points)
    return {"id": f"chart-{sym}", "kind": "chart", "title": f"{sym} mid price (UTC)",
            "series": names, "x": xs, "y": [[points[t][i] for t in xs]
                                             for i in range(len(names))]}


def _positions(doc: dict[str, Any], watch: StatusWatch, model: BusModel,
               limits: dict[str, str], now_mono: float) -> list[Card]:
    rows: list[list[Cell]] = []
    for p in doc.get("pnl", []):
        net = p.get("net")
        if net is None:
            net = (Decimal(str(p["realized"])) + Decimal(str(p["unrealized"]))
                   - Decimal(str(p["fees"])))
        rows.append([p["symbol"], dec(p["position"]), dec(p["avg_cost"]),
                     dec(p.get("mark")), dec(p["realized"]), dec(p["unrealized"]),
                     dec(p["fees"]), cls(dec(net), "good" if Decimal(str(net)) >= 0 else "bad")])
    total = total_pnl(doc)
    if total is not None:
        rows.append([cls("total", "strong"), "", "", "", dec(total["realized"]),
                     dec(total["unrealized"]), dec(total["fees"]),
                     cls(dec(total["net"]), "strong " + ("good" if total["net"] >= 0
                                                         else "bad"))])
    balances = [[b["asset"], dec(b["free"]), dec(b["locked"])] for b in doc.get("balances", [])]
    eq = watch.equity
    return [table("pnl", "Positions and PnL (TRY, from status)",
                  ["symbol", "position", "avg cost", "mark", "realized", "unrealized", "fees",
                   "net"], rows, empty="no PnL reported yet"),
            {"id": "equity", "kind": "chart", "title": "Net PnL over this dashboard session "
             "(TRY, UTC)", "series": ["net PnL"], "x": list(eq.t), "y": [list(eq.v)]},
            *_day_chart(watch),
            table("balances", "Balances", ["asset", "free", "locked"], balances)]


def _day_chart(watch: StatusWatch) -> list[Card]:
    if watch.day_log is None:
        return []
    pts = watch.day_log.points
    return [{"id": "equity-day", "kind": "chart", "title": "Net PnL over the trading day "
             "(TRY, UTC; a point every 30 s, kept across restarts)", "series": ["net PnL"],
             "x": [t for t, _ in pts], "y": [[v for _, v in pts]]}]


def _orders(doc: dict[str, Any], watch: StatusWatch, model: BusModel,
            limits: dict[str, str], now_mono: float) -> list[Card]:
    orders: list[list[Cell]] = []
    for o in reversed(model.orders.values()):
        orders.append([clock(o.first_wall), link(o.client_order_id, order_href(o.client_order_id)),
                       o.symbol, side(o.side), dec(o.price), dec(o.quantity), dec(o.filled),
                       cls(o.state, "bad" if o.state in ("UNKNOWN", "FAILED", "REJECTED")
                           else ""), o.reason])
    open_orders = [[o["symbol"], o["side"], dec(o["price"]), dec(o["quantity"]),
                    dec(o["filled_quantity"]), o["state"],
                    link(o["client_order_id"], order_href(o['client_order_id']))]
                   for o in doc.get("open_orders", [])]
    fills = [[clock(f.wall), f.trade_id, link(f.client_order_id, order_href(f.client_order_id)),
              f.symbol, side(f.side), dec(f.price), dec(f.quantity),
              f"{dec(f.fee)} {f.fee_asset}"]
             for f in reversed(model.fills)]
    return [table("open", "Open orders (executor)", ["symbol", "side", "price", "qty", "filled",
                                                     "state", "client order id"], open_orders,
                  empty="no open orders"),
            table("orders", "Orders seen on the bus", ["time", "client order id", "symbol",
                                                       "side", "price", "qty", "filled",
                                                       "state", "reason"], orders,
                  filterable=True),
            table("fills", "Fills", ["time", "trade", "client order id", "symbol", "side",
                                     "price", "qty", "fee"], fills, filterable=True)]


def order_detail(coid: str, model: BusModel) -> list[Card]:
    """An order's own history as the bus told it: the intent, risk's decision, every
    state change and the fills."""
    o = model.orders.get(coid)
    if o is None:
        return [{"id": "missing", "kind": "banner", "title": "Order", "state": "not seen",
                 "c": "bad", "lines": [f"{coid} is not among the last orders this dashboard "
                                       "saw on the bus (it keeps a bounded history)."]}]
    cards: list[Card] = [kv("order", f"Order {coid}", [
        ("symbol", o.symbol), ("side", o.side), ("price", dec(o.price)),
        ("quantity", dec(o.quantity)), ("filled", dec(o.filled)), ("state", o.state),
        ("exchange order id", str(o.exchange_order_id or "-")), ("intent", o.intent_id)]),
        table("links", "The full story", ["from the DB and the recordings"],
              [[link(f"why {coid}", why_href(coid))]])]
    timeline: list[list[Cell]] = []
    for d in model.decisions_of(o.intent_id):
        timeline.append([clock(d.wall), d.kind, d.verdict or "-", d.reasons])
    for wall, state, filled, reason in o.history:
        timeline.append([clock(wall), "order " + state, f"filled {filled}", reason])
    for f in model.fills_of(coid):
        timeline.append([clock(f.wall), "fill", f"{dec(f.quantity)} @ {dec(f.price)}",
                         f"fee {dec(f.fee)} {f.fee_asset}"])
    timeline.sort(key=lambda r: str(r[0]))
    cards.append(table("timeline", "Timeline (UTC)", ["time", "event", "detail", "reason"],
                       timeline))
    return cards


def _decisions(doc: dict[str, Any], watch: StatusWatch, model: BusModel,
               limits: dict[str, str], now_mono: float) -> list[Card]:
    rows: list[list[Cell]] = []
    for d in reversed(model.decisions):
        verdict = d.verdict or "-"
        rows.append([clock(d.wall), d.kind, d.symbol, side(d.side), dec(d.price),
                     dec(d.quantity),
                     cls(verdict, "good" if verdict in ("approved", "resized")
                         else "bad" if verdict == "rejected" else ""), d.reasons,
                     link(d.intent_id, why_href(d.intent_id))])
    return [table("decisions", "Intents and risk decisions", ["time", "kind", "symbol", "side",
                                                              "price", "qty", "verdict",
                                                              "reasons", "intent"], rows,
                  filterable=True)]


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _bus(doc: dict[str, Any], watch: StatusWatch, model: BusModel,
         limits: dict[str, str], now_mono: float) -> list[Card]:
    """The supervisor's bus health (status ``bus_health``: one computation, shown here as
    ``status`` shows it) and this dashboard's own message rates."""
    health = doc.get("bus_health") or {}
    hop_rows: list[list[Cell]] = []
    for h in health.get("hops", []):
        m1, m15 = h.get("1m") or {}, h.get("15m") or {}
        bound = "-" if h.get("bound_ms") is None else f"{h['bound_ms']:g}"
        flag = cls("OVER BOUND", "bad") if h.get("over_bound") else cls("ok", "good")
        hop_rows.append([h["hop"], f"{m1.get('per_s', 0):.1f}", _ms(m1.get("p50_ms")),
                         _ms(m1.get("p99_ms")), _ms(m15.get("p50_ms")),
                         _ms(m15.get("p99_ms")), _ms(m15.get("max_ms")), bound, flag,
                         str(h.get("meaning", ""))])
    actor_rows: list[list[Cell]] = []
    for a in health.get("actors", []):
        t1, t15 = a.get("transit_1m") or {}, a.get("transit_15m") or {}
        sub = a.get("subscriber") or {}
        if not a.get("published") and not sub:
            continue  # not on the bus (the simulator)
        actor_rows.append([a["actor"], f"{t1.get('per_s', 0):.1f}", _ms(t1.get("p50_ms")),
                           _ms(t1.get("p99_ms")), _ms(t15.get("p99_ms")),
                           cls(str(a.get("gaps", 0)), "bad" if a.get("gaps") else ""),
                           str(a.get("lost", 0)), _n(sub.get("received")),
                           cls(_n(sub.get("gaps")), "bad" if sub.get("gaps") else ""),
                           _n(sub.get("lost")), _n(sub.get("drops"))])
    items: list[tuple[str, str, str]] = []
    for slow in health.get("slow_hops", []):
        items.append(("slow hop", slow, "bad"))
    if health:
        items.append(("observed by", f"{health.get('observer', '-')} for "
                      f"{duration(health.get('observed_s'))}", ""))
    if p := health.get("proxy"):
        items.append(("proxy", f"forwarded {p['forwarded']}, dropped {p['dropped']}",
                      "bad" if p["dropped"] else ""))
    if r := health.get("recorder"):
        items.append(("recorder", f"flush lag {_n(r.get('flush_lag_ms'))} ms, dropped "
                      f"{_n(r.get('dropped'))}, gaps {_n(r.get('gaps'))}",
                      "bad" if r.get("dropped") or r.get("gaps") else ""))
    if q := health.get("queue_depth"):
        items.append(("queue depth", str(q.get("why", "")), ""))
    rates = [[fam, f"{r:.1f}", str(model.messages[fam])]
             for fam, r in model.rates(now_mono).items()]
    none = "the supervisor has not reported bus health yet"
    return [kv("businfo", "Bus", items or [("status", none)]),
            table("hops", "Per-hop latency (ms; the supervisor's last 1 and 15 minutes)",
                  ["hop", "n/s", "1m p50", "1m p99", "15m p50", "15m p99", "15m max",
                   "p99 bound", "", "measured"], hop_rows, empty=none),
            table("busactors", "Per actor: what it published (rate, transit to the "
                  "supervisor in ms, gaps) | its own subscriber",
                  ["actor", "out/s", "1m p50", "1m p99", "15m p99", "gaps", "lost",
                   "received", "its gaps", "its lost", "drops"], actor_rows, empty=none),
            table("rates", "Message rates at the dashboard (last 10 s)",
                  ["topic", "msg/s", "total"], rates)]


def _n(v: Any) -> str:
    return "-" if v is None else str(v)
