"""Backtest reports: text, JSON, and an HTML page (or a PNG) with matplotlib plots: the
equity curve, drawdown, each symbol's mid with our fills, and inventory over time."""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from backtest.engine import Result


def render_text(summary: dict[str, Any]) -> str:
    t = summary["pnl_total"]
    start = datetime.fromtimestamp(summary["start_ns"] / 1e9, UTC).isoformat(timespec="seconds")

    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [
        f"backtest {start} + {summary['duration_s']:.0f}s, {summary['books']} book updates",
        f"net PnL {t['net']} TRY = realised {t['realized']} + unrealised {t['unrealized']} "
        f"(at the mid) - fees {t['fees']}",
        f"equity {summary['start_equity']} -> {summary['end_equity']} "
        f"(change {summary['equity_change']})",
        f"max drawdown {summary['max_drawdown']} TRY "
        f"({summary['max_drawdown_fraction'] * 100:.4f} %)",
        f"Sharpe {ratio(summary['sharpe'])}  Sortino {ratio(summary['sortino'])} "
        f"(per {summary['ratio_period_s']:.0f}s steps, session, not annualised)",
        f"turnover {summary['turnover']} TRY; intents {summary['intents']}, orders "
        f"{summary['orders']}, fills {summary['fills']} ({summary['maker_fills']} maker), "
        f"fill ratio {ratio(summary['fill_ratio'])}, fees {summary['fees_paid']}",
    ]
    if summary["rejections"]:
        lines.append("risk rejections: " + ", ".join(
            f"{k} {v}" for k, v in summary["rejections"].items()))
    if summary["plugin_errors"]:
        lines.append("plug-in errors: " + "; ".join(summary["plugin_errors"]))
    for sym, row in summary["pnl"].items():
        lines.append(f"  {sym:<8} net {row['net']} realised {row['realized']} unrealised "
                     f"{row['unrealized']} fees {row['fees']} mark {row['mark']} "
                     f"inventory {summary['final_inventory'].get(sym, '0')}")
    return "\n".join(lines)


def render_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True)


def figure(result: Result) -> Any:
    """The matplotlib figure: equity, drawdown, price with fills, inventory."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    t0 = result.start_ns
    xs = [(s.ts_ns - t0) / 60e9 for s in result.samples]
    equity = [float(s.equity) for s in result.samples]
    peak, dd = float("-inf"), []
    for e in equity:
        peak = max(peak, e)
        dd.append(e - peak)
    symbols = sorted({sym for s in result.samples for sym in s.mids})
    fig, axes = plt.subplots(3 + len(symbols), 1, figsize=(11, 3 * (3 + len(symbols))),
                             sharex=True)
    axes[0].plot(xs, equity, color="tab:blue")
    axes[0].set_ylabel("equity (TRY)")
    axes[0].set_title("equity at the mid")
    axes[1].fill_between(xs, dd, 0, color="tab:red", alpha=0.4)
    axes[1].set_ylabel("drawdown (TRY)")
    for sym in symbols:
        axes[2].plot(xs, [float(s.inventory.get(sym, Decimal(0)) * s.mids.get(sym, Decimal(0)))
                          for s in result.samples], label=sym)
    axes[2].set_ylabel("inventory (TRY at mid)")
    axes[2].legend(loc="upper left")
    for ax, sym in zip(axes[3:], symbols, strict=False):
        pts = [(x, float(s.mids[sym])) for x, s in zip(xs, result.samples, strict=False)
               if sym in s.mids]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="0.4", lw=0.8)
        for side, colour, marker in (("buy", "tab:green", "^"), ("sell", "tab:red", "v")):
            fx = [(f.ts_ns - t0) / 60e9 for f in result.fills
                  if f.symbol == sym and f.side == side]
            fy = [float(f.price) for f in result.fills if f.symbol == sym and f.side == side]
            ax.scatter(fx, fy, c=colour, marker=marker, s=24, label=f"{side} fills", zorder=3)
        ax.set_ylabel(f"{sym} mid")
        ax.legend(loc="upper left")
    axes[-1].set_xlabel("minutes from start")
    fig.tight_layout()
    return fig


def write_report(path: str | Path, result: Result, summary: dict[str, Any]) -> Path:
    """``.png``: the plots; anything else: an HTML page with the figures inline and the
    summary table."""
    import matplotlib.pyplot as plt

    out = Path(path)
    fig = figure(result)
    try:
        if out.suffix.lower() == ".png":
            fig.savefig(out, dpi=90)
            return out
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
    finally:
        plt.close(fig)
    img = base64.b64encode(buf.getvalue()).decode()
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in summary.items() if not isinstance(v, dict))
    t = summary["pnl_total"]
    out.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>btcbot backtest</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;"
        "text-align:left;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>Backtest</h1><p>net PnL <b>{html.escape(t['net'])}</b> TRY = realised "
        f"{html.escape(t['realized'])} + unrealised {html.escape(t['unrealized'])} (at the "
        f"mid) &minus; fees {html.escape(t['fees'])}</p>"
        f"<pre>{html.escape(render_text(summary))}</pre>"
        f"<img alt='equity, drawdown, inventory, prices with fills' "
        f"src='data:image/png;base64,{img}'><table>{rows}</table></body></html>")
    return out
