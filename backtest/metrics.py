"""Backtest figures from the engine's result (pure). Money by shared/pnl.py.

- net PnL, realised (gross), unrealised at the mid, fees: the one definition, summed;
- max drawdown: the largest fall of the equity curve from a previous peak (TRY, and as a
  fraction of that peak);
- Sharpe and Sortino: from the equity curve's changes over fixed steps of
  ``period_s`` (default 60 s) of message clock, relative to the starting equity, with a
  zero risk-free rate, *not annualised* (mean / std over the session's steps, times the
  square root of the number of steps: a session figure); None when there are fewer than
  two steps or no variation;
- turnover: the traded notional (TRY), and that over the starting equity;
- orders, fills, fill ratio (orders with at least one fill / orders), maker share;
- inventory: per symbol, the held quantity over time (samples).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from backtest.engine import Result
from shared import pnl


def _f(x: Decimal) -> str:
    return format(x, "f")


def drawdown(equity: list[Decimal]) -> tuple[Decimal, Decimal]:
    peak = None
    worst, worst_frac = Decimal(0), Decimal(0)
    for e in equity:
        peak = e if peak is None or e > peak else peak
        dd = peak - e
        if dd > worst:
            worst = dd
            worst_frac = dd / peak if peak else Decimal(0)
    return worst, worst_frac


def ratios(result: Result, period_s: float) -> tuple[float | None, float | None]:
    if not result.samples or not result.start_equity:
        return None, None
    step = int(period_s * 1e9)
    points: list[Decimal] = []
    next_t = result.samples[0].ts_ns
    for s in result.samples:
        if s.ts_ns >= next_t:
            points.append(s.equity)
            next_t = s.ts_ns + step
    if points[-1] is not result.samples[-1].equity:
        points.append(result.samples[-1].equity)
    base = float(result.start_equity)
    rets = [float(b - a) / base for a, b in zip(points, points[1:], strict=False)]
    if len(rets) < 2:
        return None, None
    mean = sum(rets) / len(rets)
    sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))
    down = [min(r, 0.0) for r in rets]
    dsd = math.sqrt(sum(d * d for d in down) / len(down))
    n = math.sqrt(len(rets))
    sharpe = mean / sd * n if sd > 0 else None
    sortino = mean / dsd * n if dsd > 0 else None
    return sharpe, sortino


def inventory_series(result: Result, period_s: float) -> list[dict[str, Any]]:
    """Held quantity per symbol and equity, every ``period_s`` of message clock."""
    out: list[dict[str, Any]] = []
    step, next_t = int(period_s * 1e9), 0
    for i, s in enumerate(result.samples):
        if s.ts_ns >= next_t or i == len(result.samples) - 1:
            out.append({"ts_ns": s.ts_ns, "equity": _f(s.equity),
                        "inventory": {k: _f(v) for k, v in sorted(s.inventory.items())}})
            next_t = s.ts_ns + step
    return out


def summary(result: Result, period_s: float = 60.0) -> dict[str, Any]:
    total = pnl.total(result.pnl_rows.values())
    equity = [s.equity for s in result.samples]
    dd, dd_frac = drawdown(equity)
    sharpe, sortino = ratios(result, period_s)
    turnover = sum((f.price * f.quantity for f in result.fills), Decimal(0))
    filled_orders = {f.cid for f in result.fills}
    maker = sum(1 for f in result.fills if f.maker)
    end_equity = equity[-1] if equity else result.start_equity
    return {
        "start_ns": result.start_ns, "end_ns": result.end_ns,
        "duration_s": round((result.end_ns - result.start_ns) / 1e9, 3),
        "books": result.books,
        "pnl_total": {"realized": _f(total.realized), "unrealized": _f(total.unrealized),
                      "fees": _f(total.fees), "net": _f(total.net)},
        "pnl": {s: {"realized": _f(r.realized), "unrealized": _f(r.unrealized),
                    "fees": _f(r.fees), "net": _f(r.net),
                    "mark": None if r.mark is None else _f(r.mark)}
                for s, r in result.pnl_rows.items()},
        "start_equity": _f(result.start_equity), "end_equity": _f(end_equity),
        "equity_change": _f(end_equity - result.start_equity),
        "max_drawdown": _f(dd), "max_drawdown_fraction": float(dd_frac),
        "sharpe": sharpe, "sortino": sortino, "ratio_period_s": period_s,
        "turnover": _f(turnover),
        "turnover_over_equity": float(turnover / result.start_equity)
        if result.start_equity else None,
        "intents": result.intents, "orders": len(result.orders), "fills": len(result.fills),
        "orders_filled": len(filled_orders),
        "fill_ratio": len(filled_orders) / len(result.orders) if result.orders else None,
        "maker_fills": maker,
        "fees_paid": _f(sum((f.fee for f in result.fills), Decimal(0))),
        "rejections": dict(sorted(result.rejections.items())),
        "plugin_errors": result.plugin_errors,
        "final_inventory": {s: _f(r) for s, r in (
            result.samples[-1].inventory.items() if result.samples else [])},
        "inventory": inventory_series(result, period_s),
        "balances": {a: _f(v) for a, v in result.balances.items()},
    }
