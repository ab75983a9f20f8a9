"""``start`` checks the configured symbols against the exchange's exchangeinfo before
any actor runs (issue 16): an unknown symbol stops the start with exit 2 naming it,
instead of marketdata exiting 2 five times with the reason only in its log.

The exchange asked is the one the pipeline will use (``cfg.rest_url``): the embedded
simulator in paper mode (the supervisor asks once it is READY), BTCTurk's public
exchangeinfo in live mode, the configured public source in dry-run.

When the exchange cannot be asked (``judge``, pure):
- live: refuse to start (exit 1). A live pipeline that cannot reach the exchange cannot
  trade, preflight would FAIL on the same call, and starting it would leave marketdata
  to find a bad symbol later with money at stake.
- paper: the simulator is ours and was just probed READY; not answering exchangeinfo
  is a broken start: refuse (exit 1). A simulator another supervisor runs (a split
  deployment) may simply not be up yet: warn and start, as below.
- dry-run: no money moves and marketdata checks again when it loads the rules (its own
  exit 2 on an unknown symbol): warn and start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.btcturk.client import BtcTurkClient
from shared.btcturk.errors import BtcTurkError
from shared.config import Config

Verdict = Literal["ok", "unknown", "unreachable"]
Action = Literal["start", "warn", "refuse_usage", "refuse"]


@dataclass(frozen=True)
class SymbolCheck:
    verdict: Verdict
    unknown: tuple[str, ...] = ()
    error: str = ""
    url: str = ""


def unknown_symbols(configured: list[str], listed: list[str]) -> list[str]:
    """Configured symbols the exchange does not list (``BTC_TRY`` and ``BTCTRY`` are one)."""
    names = {n.replace("_", "").upper() for n in listed}
    return [s for s in configured if s.replace("_", "").upper() not in names]


def judge(mode: str, check: SymbolCheck, *, simulator_ours: bool = True) -> tuple[Action, str]:
    """What ``start`` does with a check, and the line it says. ``simulator_ours``: the
    paper simulator is this supervisor's child (it was probed READY)."""
    if check.verdict == "ok":
        return "start", ""
    if check.verdict == "unknown":
        return "refuse_usage", (f"marketdata.symbols: not listed by the exchange's "
                                f"exchangeinfo ({check.url}): {', '.join(check.unknown)}")
    reason = f"cannot check marketdata.symbols: exchangeinfo at {check.url} failed: {check.error}"
    if mode == "dry-run" or (mode == "paper" and not simulator_ours):
        return "warn", f"{reason}; starting anyway ({mode}: marketdata checks them again)"
    return "refuse", f"{reason}; not starting ({mode} mode)"


async def check_symbols(cfg: Config) -> SymbolCheck:
    """Ask ``cfg.rest_url`` for exchangeinfo (public, unsigned)."""
    url = f"{cfg.rest_url}/api/v2/server/exchangeinfo"
    client = BtcTurkClient(cfg.rest_url, timeout_s=cfg.exchange.timeout_s, rate_limits=False)
    try:
        info = await client.exchange_info()
    except (BtcTurkError, OSError, TimeoutError) as exc:
        return SymbolCheck("unreachable", error=str(exc) or type(exc).__name__, url=url)
    finally:
        await client.close()
    missing = unknown_symbols(cfg.marketdata.symbols, [s.name for s in info.symbols])
    return SymbolCheck("unknown" if missing else "ok", tuple(missing), url=url)
