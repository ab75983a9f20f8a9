"""The day's equity curve, kept across restarts of the dashboard: the total net PnL
from status, one point every ``interval_s``, appended to a small 0600 CSV under data/.

At start the file is read back and trimmed to the current trading day (the same
boundary risk's daily loss uses), so it never grows past one day of points.
A write error is logged and counted, never fatal: the curve is a picture, not a
record anyone settles money on.
"""

from __future__ import annotations

import os
from pathlib import Path

from loguru import logger

from shared.tradingday import TradingDay

NS = 1_000_000_000


class EquityLog:
    def __init__(self, path: Path, day: TradingDay, *, interval_s: float = 30.0) -> None:
        self.path, self.day, self.interval_s = path, day, interval_s
        self.points: list[tuple[float, float]] = []
        self.errors = 0
        self._last_t = 0.0

    def load(self, now: float) -> None:
        """Today's points from the file; older days are dropped from it."""
        today = self.day.day(int(now * NS))
        kept: list[tuple[float, float]] = []
        try:
            for line in self.path.read_text().splitlines():
                try:
                    t_s, v_s = line.split(",")
                    t, v = float(t_s), float(v_s)
                except ValueError:
                    continue  # a torn last line after a crash
                if self.day.day(int(t * NS)) == today:
                    kept.append((t, v))
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.errors += 1
            logger.warning("dashboard: cannot read {}: {}", self.path, exc)
        self.points = kept
        self._rewrite()

    def add(self, t: float, net: float) -> None:
        if t - self._last_t < self.interval_s:
            return
        self._last_t = t
        if self.points and self.day.day(int(t * NS)) != self.day.day(int(self.points[-1][0] * NS)):
            self.points = []  # a new trading day starts a new curve
            self._rewrite()
        self.points.append((t, net))
        self._write(f"{t:.3f},{net!r}\n", append=True)

    def _rewrite(self) -> None:
        self._write("".join(f"{t:.3f},{v!r}\n" for t, v in self.points), append=False)

    def _write(self, text: str, *, append: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o600)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            self.errors += 1
            logger.warning("dashboard: cannot write {}: {}", self.path, exc)
