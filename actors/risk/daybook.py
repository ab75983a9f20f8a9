"""Risk's daily-loss baseline, kept across restarts of risk.

The daily loss is how far net PnL (shared/pnl.py) fell since the trading day's baseline,
the net PnL at the first executor snapshot of that day (actors/risk/state.py). That
baseline is the one figure of risk's state that the bus cannot give back: after a
restart the first snapshot shows today's PnL *including* today's loss, and taking it as
the baseline would forget the loss (a risk killed at -400 TRY of a 500 TRY limit would
allow another 500). So risk writes the baseline to ``<data_dir>/risk.day`` whenever it
is taken, durably (temporary file, fsync, rename, fsync of the directory), and a new
risk adopts it while the day is the same.

The file names the day boundary it was taken under; one taken under another boundary
(the config changed) is not today's baseline and is ignored. A file that cannot be
parsed is an error, never silently replaced: replacing it would reset the day's loss.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from shared.files import write_private_file
from shared.tradingday import TradingDay

FILE = "risk.day"


class DayBookError(Exception):
    pass


@dataclass(frozen=True)
class DayBaseline:
    day: int  # TradingDay.day ordinal
    start_net: Decimal  # net PnL at the baseline
    marked: bool  # every held position had a mark when it was taken


def path_in(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / FILE


def _boundary(td: TradingDay) -> str:
    return f"{td.tz.key}@{td.hour}"


def load(path: Path, td: TradingDay) -> DayBaseline | None:
    """The persisted baseline, or None (no file, or one of another day boundary)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DayBookError(f"{path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
        if doc["boundary"] != _boundary(td):
            return None
        return DayBaseline(int(doc["day"]), Decimal(doc["start_net"]), bool(doc["marked"]))
    except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
        raise DayBookError(
            f"{path}: unreadable daily-loss baseline ({type(exc).__name__}: {exc}); restore "
            "it, or remove it to start today's loss count from the current PnL") from None


def save(path: Path, td: TradingDay, base: DayBaseline) -> None:
    """Durably replace the file (a crash leaves the old one or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"boundary": _boundary(td), "day": base.day, "start_net": format(base.start_net, "f"),
           "marked": base.marked}
    write_private_file(path, json.dumps(doc).encode() + b"\n")
