"""``--sweep key=v1,v2,...``: every combination, one backtest each, in parallel processes,
ranked by net PnL (then by max drawdown, smaller first)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from decimal import Decimal
from typing import Any

from backtest import runner
from shared.config import Config, ConfigError


def grid(items: Sequence[str]) -> list[dict[str, str]]:
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise ConfigError(f"--sweep {item!r}: expected key=v1,v2,...")
        axes.append([(key.strip(), v) for v in vals])
    return [dict(combo) for combo in itertools.product(*axes)]


def _one(args: tuple[Config, runner.Options, dict[str, str]]) -> dict[str, Any]:
    base, opts, point = args
    try:
        _, summary = runner.run(base, replace(opts, sets={**opts.sets, **point}))
    except ConfigError as exc:
        return {"point": point, "error": str(exc)}
    return {"point": point, "summary": summary}


def sweep(base: Config, opts: runner.Options, items: Sequence[str],
          workers: int | None = None,
          done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Every point of the grid, ranked; ``done`` is called as each one finishes."""
    points = grid(items)
    workers = max(1, min(workers or os.cpu_count() or 1, len(points)))
    rows = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for row in pool.map(_one, [(base, opts, p) for p in points]):
            rows.append(row)
            if done is not None:
                done()

    def rank(row: dict[str, Any]) -> tuple[int, Decimal, Decimal]:
        s = row.get("summary")
        if s is None:
            return (1, Decimal(0), Decimal(0))
        return (0, -Decimal(s["pnl_total"]["net"]), Decimal(s["max_drawdown"]))

    return sorted(rows, key=rank)


def render(rows: list[dict[str, Any]]) -> str:
    keys = sorted({k for r in rows for k in r["point"]})
    head = ["rank", *keys, "net", "fees", "max_dd", "sharpe", "orders", "fills", "fill_ratio"]
    table = [head]
    for n, r in enumerate(rows, 1):
        s = r.get("summary")
        cells = [str(n), *(r["point"].get(k, "") for k in keys)]
        if s is None:
            cells += [f"error: {r['error']}"]
        else:
            cells += [s["pnl_total"]["net"][:12], s["fees_paid"][:10], s["max_drawdown"][:10],
                      "-" if s["sharpe"] is None else f"{s['sharpe']:.2f}", str(s["orders"]),
                      str(s["fills"]),
                      "-" if s["fill_ratio"] is None else f"{s['fill_ratio']:.2f}"]
        table.append(cells)
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(row))
                     for row in table)
