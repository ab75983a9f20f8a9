"""Where orders go: one Venue interface (base.py) and its implementations; ``make_venue``
picks one from the config's mode, once, at wiring time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from actors.executor.faults import Faults
from actors.executor.venues.base import Venue
from actors.executor.venues.btcturk import BtcTurkVenue
from actors.executor.venues.dryrun import DryRunVenue
from actors.executor.venues.mirror import MirrorVenue
from shared.btcturk.client import BtcTurkClient
from shared.btcturk.http import HttpTransport
from shared.clock import Clock
from shared.config import Config

__all__ = ["Venue", "make_venue"]


def make_venue(cfg: Config, counters: Counter[str], clock: Clock, faults: Faults, *,
               http: HttpTransport | None = None, ws_session: Any = None) -> Venue:
    ex = cfg.executor
    if cfg.mode == "dry-run":
        if ex.replay_mirror:
            return MirrorVenue(counters)
        # Ids above any earlier run's: milliseconds since the epoch, then counting up.
        return DryRunVenue(ex.dry_run_fee_bps, clock.wall_ns() // 10**6)
    key, secret = cfg.credentials()
    # The rate journal lives beside the DB, under the executor's lock (one writer): a
    # restarted executor paces from the requests its previous run sent (the exchange
    # still counts them), not from an empty window.
    journal = Path(f"{cfg.path(ex.db_path)}.ratewindow") if ex.client_rate_limit else None
    client = BtcTurkClient(cfg.rest_url, key or None, secret or None,
                           timeout_s=cfg.exchange.timeout_s,
                           rate_limits=None if ex.client_rate_limit else False, http=http,
                           rate_journal=journal, wall=lambda: clock.wall_ns() / 1e9)
    venue = BtcTurkVenue(client, ws_url=cfg.ws_url, credentials=(key, secret),
                         private_ws=ex.private_ws, fast_poll_s=ex.order_poll_interval_s,
                         slow_poll_s=ex.ws_poll_interval_s, counters=counters, clock=clock,
                         ws_session=ws_session)
    return faults.wrap(venue, cfg.rest_url)  # type: ignore[arg-type]
