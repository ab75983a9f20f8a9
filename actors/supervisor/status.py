"""The status document (``status --json``) and its human rendering.

The system's trading state is derived, never stored: from the actors' FSM
states, the gates in the config, the latches the executor persists, and the
freshness of market data.
"""

from __future__ import annotations

import os
import textwrap
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from actors.supervisor.trading_state import ActorView, TradingInputs
from actors.supervisor.trading_state import derive_trading_state as pure_trading_state
from bus.messages import (
    ActorInfo,
    AlertsInfo,
    ExecutorInfo,
    PortfolioSnapshot,
    RecorderInfo,
    SymbolPnl,
)
from shared import pending_latches, pnl
from shared.config import Config
from shared.plain import plain, plain_builtins

if TYPE_CHECKING:
    from actors.supervisor.core import Supervisor


def _pending(cfg: Config) -> dict[str, Any]:
    """Latch requests the executor has not applied yet (shared/pending_latches.py)."""
    try:
        items = pending_latches.load(pending_latches.path_in(cfg.data_path))
    except (OSError, ValueError) as exc:
        return {"unreadable": str(exc)}
    return {name: {"value": p.value, "reason": p.reason, "at": p.at}
            for name, p in pending_latches.effective(items).items()}


def build_status(sup: Supervisor, snapshot: PortfolioSnapshot | None,
                 now: float) -> dict[str, Any]:
    cfg = sup.cfg
    actors = [child.as_status(now) for child in sup.children.values()]
    executor = sup.children.get("executor")
    heard = executor.heard.info if executor is not None else None
    # What a dead or restarting executor last said is not what its DB says now: its
    # flags are unknown (None, "unknown" in the text) until it is up again.
    ex_up = executor is not None and executor.running and executor.heard.ready
    ex_info = heard if isinstance(heard, ExecutorInfo) and ex_up else None
    ex_counters = executor.heard.counters if executor is not None and ex_up else {}
    latch = {
        "kill_switch": ex_info.kill_switch if ex_info else None,
        "safety_latch": ex_info.safety_latch if ex_info else None,
        "paused": ex_info.paused if ex_info else None,
        "reason": (ex_info.latch_reason if ex_info else "") or sup.kill_switch_reason,
        # When each latch that holds was set (epoch s, from the executor's DB).
        "set_at": dict(ex_info.latch_set_at) if ex_info else {},
        "supervisor_kill_switch": sup.kill_switch_reason,
        "executor_halt": ex_info.halt if ex_info else "",
        "pending_persist": _pending(cfg),
    }
    live_problems = cfg.live_arming_problems() if cfg.mode == "live" else []
    stale = sorted(s for s, f in sup.feed.items() if not f.fresh)
    gates = {
        "mode": cfg.mode,
        "kill_switch": cfg.gates.kill_switch or bool(latch["kill_switch"]),
        "kill_switch_config": cfg.gates.kill_switch,
        "safe_mode": cfg.gates.safe_mode,
        "live_armed": cfg.mode == "live" and not live_problems,
        "live_problems": live_problems,
        "market_data": {s: f.fresh for s, f in sorted(sup.feed.items())},
        "stale_symbols": stale,
    }
    idempotency = {
        "pending": ex_counters.get("keys_pending"),
        "unknown": ex_counters.get("keys_unknown"),
        "failed": ex_counters.get("keys_failed"),
    }
    with sup.health_listener.lock:
        bus_health = sup.health.report(time.monotonic_ns(), cfg.supervisor.hop_bounds(),
                                       {c.name: c.heard.counters
                                        for c in sup.children.values() if c.running})
    doc: dict[str, Any] = {
        "running": True,
        "mode": cfg.mode,
        "exchange": {"kind": cfg.exchange_kind,
                     "url": None if cfg.mode == "dry-run" else cfg.rest_url},
        "supervisor": {"pid": os.getpid(), "uptime_s": round(now - sup.started_mono, 3),
                       "config": cfg.source_path, "runtime_dir": str(cfg.runtime_path),
                       "security": sup.security_counters()},
        "trading": derive_trading_state(sup, gates, latch, bus_health["slow_hops"]),
        "security": security_summary(actors, sup.security_counters()),
        "actors": actors,
        "gates": gates,
        "latch": latch,
        "idempotency": idempotency,
        "recordings": recordings_status(sup),
        "bus_health": bus_health,
        # Actors whose log file stopped taking writes (full or broken logs disk).
        "log_sinks_failing": {c.name: c.heard.log_sink for c in sup.children.values()
                              if c.running and c.heard.log_sink},
        "generated_at": time.time(),
    }
    doc.update(_portfolio(snapshot, sup))
    if (alerts := sup.children.get("alerts")) is not None:
        doc["alerts"] = alerts_status(alerts.heard.counters, alerts.heard.info, alerts.running)
    return doc


def alerts_status(counters: dict[str, int], info: ActorInfo | None,
                  running: bool) -> dict[str, Any]:
    """Webhook delivery as the alerts actor last reported it."""
    return {"running": running, "events": counters.get("alerts_events", 0),
            "sent": counters.get("alerts_sent", 0),
            "failed_attempts": counters.get("alerts_failed", 0),
            "dropped": counters.get("alerts_dropped", 0),
            "pending": counters.get("alerts_pending", 0),
            "last_error": info.last_error if isinstance(info, AlertsInfo) else ""}


def derive_trading_state(sup: Supervisor, gates: dict[str, Any], latch: dict[str, Any],
                         slow_hops: list[str] | None = None) -> dict[str, Any]:
    """Gathers the inputs of the pure ``trading_state.derive_trading_state``. Latches are
    unknown (None) while the executor is not up: last seen clear is not clear now."""
    cfg = sup.cfg
    executor = sup.children.get("executor")
    ex_up = executor is not None and executor.running and executor.heard.ready
    pending = latch.get("pending_persist") or {}
    rec = sup.children.get("recorder")
    rec_info = rec.heard.info if rec is not None and rec.running else None
    recording = rec_info.recording if isinstance(rec_info, RecorderInfo) else None
    state = pure_trading_state(TradingInputs(
        mode=cfg.mode,
        actors=tuple(ActorView(c.name, c.display_state(), c.running and c.heard.ready,
                               c.spec.critical(cfg)) for c in sup.children.values()),
        config_kill_switch=cfg.gates.kill_switch,
        safe_mode=cfg.gates.safe_mode,
        live_problems=tuple(gates["live_problems"]),
        kill_switch=latch["kill_switch"] if ex_up else None,
        safety_latch=latch["safety_latch"] if ex_up else None,
        paused=latch["paused"] if ex_up else None,
        pending_latches=tuple(n for n, p in pending.items()
                              if n == "unreadable" or p["value"]),
        submits_failing=bool(latch.get("executor_halt")) and ex_up,
        submit_reason=latch.get("executor_halt") or "",
        stale_symbols=tuple(gates["stale_symbols"]),
        feed_heard=bool(sup.feed) or "marketdata" not in sup.children,
        recorder_required=cfg.recorder.required,
        recorder_recording=recording,
        recorder_reason=rec_info.recording_reason if isinstance(rec_info, RecorderInfo)
        else "",
        slow_hops=tuple(slow_hops or ()),
    ))
    return {"state": state.state, "reasons": list(state.reasons)}


def recordings_status(sup: Supervisor) -> dict[str, Any] | None:
    """The recorder's own figures (its heartbeat): whether it records, the recordings'
    size, the oldest record, the free space on their filesystem and the low-disk
    warning (``recorder.disk_warn_bytes``)."""
    rec = sup.children.get("recorder")
    if rec is None or not rec.heard.counters:
        return None
    c = rec.heard.counters
    info = rec.heard.info if isinstance(rec.heard.info, RecorderInfo) else RecorderInfo(segment="")
    oldest = c.get("oldest_record_ns", 0)
    return {
        "recording": info.recording,
        "reason": info.recording_reason,
        "directory": info.directory,
        "bytes": c.get("recordings_bytes", 0),
        "segments": c.get("recordings_segments", 0),
        "oldest_record": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(oldest / 1e9))
                          if oldest else None),
        "free_bytes": c.get("disk_free_bytes", 0),
        "disk_low": bool(c.get("disk_low", 0)),
        "warning": info.disk_warning,
        "dropped": c.get("dropped", 0),
        "write_errors": c.get("write_errors", 0),
        "pruned": c.get("pruned", 0),
        "compress_errors": c.get("compress_errors", 0),
    }


def _portfolio(snapshot: PortfolioSnapshot | None, sup: Supervisor) -> dict[str, Any]:
    out: dict[str, Any] = {"positions": [], "open_orders": [], "balances": [], "pnl": []}
    if snapshot is not None:
        out["positions"] = plain_builtins(snapshot.positions)
        out["open_orders"] = plain_builtins(snapshot.open_orders)
        out["balances"] = plain_builtins(snapshot.balances)
    if sup.last_report is not None:
        out["pnl"] = plain_builtins(sup.last_report.pnl)
        out["pnl_total"] = _pnl_total(sup.last_report.pnl)
        out["reconcile"] = {"ok": sup.last_report.ok, "failures": sup.last_report.failures,
                            "drift_found": sup.last_report.drift_found,
                            "drift_fixed": sup.last_report.drift_fixed}
    return out


def _pnl_total(rows: list[SymbolPnl]) -> dict[str, str]:
    """The sum of the reconciler's rows, by the one definition (shared/pnl.py). Rows
    from an older reconciler without a mark are summed as they are."""
    t = pnl.total(pnl.Pnl(r.realized, r.unrealized, r.fees, r.mark) for r in rows)
    return {"realized": plain(t.realized), "unrealized": plain(t.unrealized),
            "fees": plain(t.fees), "net": plain(t.net)}


def _known(value: Any) -> str:
    """None (the executor is not up to say) reads "unknown", never "None"."""
    return "unknown" if value is None else str(value)


def _fmt_age(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}s"


# What the authenticated bus refused (bus/auth.py, bus/roles.py), from every bind side's
# heartbeat counters and the supervisor's own control socket: counter -> status key.
SECURITY_COUNTERS = {
    "auth_refused_unknown_key": "unknown_keys",
    "auth_handshake_failed": "failed_handshakes",
    "cmd_unauthorized": "unauthorized_commands",
    "proxy_dropped_forbidden_topic": "forbidden_topics",
    "heartbeat_mismatches": "heartbeat_mismatches",
}


def security_summary(actors: list[dict[str, Any]],
                     supervisor: dict[str, int]) -> dict[str, Any]:
    """Totals of the bus's refusals, and who counted each (an operator's first question
    after a nonzero total: which socket)."""
    totals = dict.fromkeys(SECURITY_COUNTERS.values(), 0)
    where: dict[str, dict[str, int]] = {}
    sources = [(a["name"], a.get("counters") or {}) for a in actors]
    sources.append(("supervisor", supervisor))
    for name, counters in sources:
        for counter, key in SECURITY_COUNTERS.items():
            n = int(counters.get(counter) or 0)
            if n:
                totals[key] += n
                where.setdefault(key, {})[name] = n
    return {**totals, "where": where}


def render_security(sec: dict[str, Any]) -> str:
    refused = {k: v for k, v in sec.items() if k != "where" and v}
    if not refused:
        return "bus security: nothing refused (CURVE on every socket)"
    return "bus security: REFUSED " + ", ".join(
        f"{k.replace('_', ' ')} {v} ({', '.join(sorted(sec['where'][k]))})"
        for k, v in refused.items())


def render_text(doc: dict[str, Any]) -> str:
    lines = [
        f"mode {doc['mode']}  exchange {doc['exchange']['kind']} {doc['exchange']['url'] or ''}",
        f"trading {doc['trading']['state']}"
        + (f"  ({'; '.join(doc['trading']['reasons'])})" if doc["trading"]["reasons"] else ""),
        "",
        # 79 columns: the longest state (DEGRADED_RECOVERY) and pid (7 digits) fit
        f"{'actor':<13}{'pid':>8} {'state':<18}{'restarts':>8}{'uptime':>9}{'hb age':>7}"
        f"{'cpu%':>7}{'rss MB':>8}",
    ]
    for a in doc["actors"]:
        rss = f"{a['rss_bytes'] / 1e6:.1f}" if a["rss_bytes"] else "-"
        cpu = "-" if a["cpu_percent"] is None else f"{a['cpu_percent']:.1f}"
        lines.append(
            f"{a['name'][:12]:<13}{a['pid'] or '-':>8} {a['state'][:17]:<18}{a['restarts']:>8}"
            f"{a['uptime_s']:>8.0f}s{_fmt_age(a['heartbeat_age_s']):>7}"
            f"{cpu:>7}{rss:>8}"
        )
    g, latch, keys = doc["gates"], doc["latch"], doc["idempotency"]
    lines += [
        "",
        f"gates: kill_switch={g['kill_switch']} safe_mode={g['safe_mode']} "
        f"live_armed={g['live_armed']} stale={','.join(g['stale_symbols']) or 'none'}",
        f"latch: kill_switch={_known(latch['kill_switch'])} "
        f"safety_latch={_known(latch['safety_latch'])} paused={_known(latch['paused'])} "
        f"{latch['reason']}",
        *([f"latch set at: {_set_times(latch['set_at'])}"] if latch.get("set_at") else []),
        f"idempotency keys: pending={_known(keys['pending'])} "
        f"unknown={_known(keys['unknown'])} failed={_known(keys['failed'])}",
    ]
    if sec := doc.get("security"):
        lines.append(render_security(sec))
    rec = doc.get("recordings")
    if rec:
        state = "recording" if rec["recording"] else f"NOT RECORDING ({rec['reason']})"
        lines.append(
            f"recordings: {state}; {rec['bytes'] / 1e6:.1f} MB in {rec['segments']} segments, "
            f"oldest {rec['oldest_record'] or '-'}, {rec['free_bytes'] / 1e9:.1f} GB free"
            + (f"  WARNING: {rec['warning']}" if rec["warning"] else ""))
    for name, why in sorted((doc.get("log_sinks_failing") or {}).items()):
        lines.append(f"WARNING: {name}'s log file is not being written: {why}")
    if al := doc.get("alerts"):
        lines.append(f"alerts: sent={al['sent']} failed={al['failed_attempts']} "
                     f"dropped={al['dropped']} pending={al['pending']}")
        if al["last_error"]:  # on its own line, cut to fit 80 columns
            lines.append(f"  last error: {al['last_error']}"[:80])
    lines += _render_portfolio(doc)
    if doc.get("bus_health"):
        lines += ["", *render_bus_health(doc["bus_health"])]
    return "\n".join(fit(lines))


WIDTH = 80  # status fits an 80-column terminal


def _set_times(set_at: dict[str, float]) -> str:
    return " ".join(
        f"{name}={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))}"
        for name, at in sorted(set_at.items()))


def fit(lines: list[str], width: int = WIDTH) -> list[str]:
    """Tables are laid out to fit; free text (reasons, paths, symbol lists) is wrapped,
    never cut, its continuation indented under the line it continues."""
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * min(len(line) - len(line.lstrip(" ")) + 4, 20)
        out += textwrap.wrap(line, width, subsequent_indent=indent,
                             break_on_hyphens=False) or [""]
    return out


def _ms(value: float | None) -> str:
    """A latency in 7 characters or fewer: µs precision while small."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.3f}"
    return f"{value:.1f}" if value < 10_000 else f"{value:.0f}"


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def render_bus_health(h: dict[str, Any]) -> list[str]:
    """The bus-health tables of ``status`` (80 columns)."""
    lines = [f"bus health (ms, from envelope stamps; last 1m and 15m; observed "
             f"{h['observed_s']:.0f}s)",
             f"{'hop':<20}{'n/s':>7}{'1m p50':>8}{'1m p99':>8}{'15m p50':>8}{'15m p99':>8}"
             f"{'bound':>8}"]
    for r in h["hops"]:
        m1, m15 = r["1m"], r["15m"]
        bound = "-" if r["bound_ms"] is None else f"{r['bound_ms']:g}"
        lines.append(f"{r['hop']:<20}{m1['per_s']:>7.1f}{_ms(m1['p50_ms']):>8}"
                     f"{_ms(m1['p99_ms']):>8}{_ms(m15['p50_ms']):>8}{_ms(m15['p99_ms']):>8}"
                     f"{bound:>8}" + ("  SLOW" if r["over_bound"] else ""))
    lines.append(f"{'actor':<13}{'out/s':>7}{'p50':>8}{'p99':>8}{'gaps':>6}{'lost':>6} |"
                 f"{'recv':>9}{'gaps':>6}{'lost':>6}{'drops':>7}")
    for a in h["actors"]:
        t = a["transit_1m"]
        sub = a.get("subscriber") or {}
        if not a["published"] and not sub:
            continue  # not on the bus (the simulator)
        lines.append(f"{a['actor'][:12]:<13}{t['per_s']:>7.1f}{_ms(t['p50_ms']):>8}"
                     f"{_ms(t['p99_ms']):>8}{a['gaps']:>6}{a['lost']:>6} |"
                     f"{_n(sub.get('received')):>9}{_n(sub.get('gaps')):>6}"
                     f"{_n(sub.get('lost')):>6}{_n(sub.get('drops')):>7}")
    lines.append("  (out: what it published, transit to the supervisor over 1m, gaps seen "
                 "here;")
    lines.append("   | its own subscriber: received, gaps, drops refused as malformed)")
    if p := h.get("proxy"):
        lines.append(f"proxy: forwarded {p['forwarded']}, dropped {p['dropped']}")
    if r := h.get("recorder"):
        lines.append(f"recorder: flush lag {_n(r['flush_lag_ms'])} ms, dropped "
                     f"{_n(r['dropped'])}, gaps {_n(r['gaps'])}")
    lines.append("queue depth: not exposed by ZeroMQ (backlog shows as transit latency)")
    for slow in h.get("slow_hops", []):
        lines.append(f"WARN slow hop: {slow}"[:80])
    return lines


def _short(value: Any) -> str:
    """An average cost to 10 significant digits (a division carries 28); --json keeps
    every digit."""
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    return str(value) if not d.is_finite() or len(d.as_tuple().digits) <= 10 else f"{d:.10g}"


def _render_portfolio(doc: dict[str, Any]) -> list[str]:
    lines = []
    if doc.get("open_orders"):
        lines += ["", "open orders:"]
        for o in doc["open_orders"]:
            lines.append(f"  {o['symbol']:<8} {o['side']:<4} {o['quantity']} @ {o['price']} "
                         f"filled {o['filled_quantity']} {o['state']} {o['client_order_id']}")
    if doc.get("pnl"):
        lines += ["", "positions and PnL (TRY; realised gross of fees, unrealised at the mid;",
                  "net = realised + unrealised - fees):"]
        for p in doc["pnl"]:
            lines.append(f"  {p['symbol']:<8} qty {p['position']} avg {_short(p['avg_cost'])} "
                         f"mark {p.get('mark') or '-'}")
            lines.append(f"  {'':<8} realised {p['realized']} unrealised {p['unrealized']} "
                         f"fees {p['fees']} net {p.get('net')}")
        t = doc.get("pnl_total")
        if t:
            lines.append(f"  total: realised {t['realized']} unrealised {t['unrealized']} "
                         f"fees {t['fees']} net {t['net']}")
    elif doc.get("positions"):
        lines += ["", "positions:"]
        for p in doc["positions"]:
            lines.append(f"  {p['symbol']:<8} qty {p['quantity']} avg {_short(p['avg_cost'])}")
    return lines
