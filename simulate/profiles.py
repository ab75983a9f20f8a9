"""Fault profiles: how often each fault happens, written down (docs/simulation.md).

Rates are per message / per request (probabilities) or per simulated hour (events, drawn
as a Poisson process from the world's one random source). ``none`` injects nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # bus, per message
    pubsub_loss: float = 0.0
    req_loss: float = 0.0
    reply_loss: float = 0.0
    reply_late: float = 0.0
    crash_at_boundary: float = 0.0  # an actor dies before handling a message
    # exchange, per request
    connect_refused: float = 0.0
    timeout: float = 0.0
    server_error: float = 0.0
    rate_limited: float = 0.0
    drop_after_accept: float = 0.0
    repeat_trade: float = 0.0
    # the private WebSocket, per private frame
    private_repeat: float = 0.0  # the frame is sent twice
    private_late: float = 0.0  # the feed lags 1-10 s from this frame on
    # events per simulated hour
    outages: float = 0.0  # exchange refuses / 503s everything for 10-60 s
    frozen_books: float = 0.0  # one symbol's book stops moving for 10-90 s
    late_fills: float = 0.0  # user trades listed 5-30 s late for 30-120 s
    vanishing_orders: float = 0.0  # an open order disappears at the exchange
    clock_skews: float = 0.0  # one actor's wall clock off by up to +-2 s for 30-300 s
    full_disks: float = 0.0  # the executor's DB refuses writes for 10-60 s
    kill_switch: float = 0.0  # the operator sets the kill switch for 30-300 s
    pauses: float = 0.0  # the operator pauses trading for 30-300 s
    venue_crashes: float = 0.0  # the exchange process dies, restarts from its state file
    ws_drops: float = 0.0  # the private WebSocket connection is dropped by the exchange
    public_ws_drops: float = 0.0  # marketdata's public WebSocket is dropped by the exchange
    public_ws_freezes: float = 0.0  # one pair's public frames stop for 10-90 s, socket up


PROFILES: dict[str, Profile] = {
    "none": Profile("none"),
    "default": Profile(
        "default",
        pubsub_loss=0.001, req_loss=0.001, reply_loss=0.001, reply_late=0.001,
        crash_at_boundary=0.00003,  # ~5 crashes an hour (the bus carries ~50 msg/s)
        connect_refused=0.003, timeout=0.002, server_error=0.005, rate_limited=0.003,
        drop_after_accept=0.01, repeat_trade=0.02, private_repeat=0.02, private_late=0.01,
        outages=1.0, frozen_books=2.0, late_fills=1.0, vanishing_orders=1.0,
        clock_skews=1.0, full_disks=0.5, kill_switch=2.0, pauses=1.0, venue_crashes=0.5,
        ws_drops=1.0, public_ws_drops=2.0, public_ws_freezes=2.0,
    ),
    "harsh": Profile(
        "harsh",
        pubsub_loss=0.01, req_loss=0.01, reply_loss=0.01, reply_late=0.01,
        crash_at_boundary=0.0002,  # ~35 an hour
        connect_refused=0.02, timeout=0.01, server_error=0.03, rate_limited=0.02,
        drop_after_accept=0.05, repeat_trade=0.1, private_repeat=0.1, private_late=0.05,
        outages=4.0, frozen_books=6.0, late_fills=4.0, vanishing_orders=4.0,
        clock_skews=4.0, full_disks=2.0, kill_switch=6.0, pauses=4.0, venue_crashes=2.0,
        ws_drops=4.0, public_ws_drops=6.0, public_ws_freezes=6.0,
    ),
}


# Every fault by name (``--without`` switches some off; the shrinker uses it). Rates are
# per message/request, events per simulated hour (simulate/profiles.py).
RATE_FAULTS = ("pubsub_loss", "req_loss", "reply_loss", "reply_late", "crash_at_boundary",
               "connect_refused", "timeout", "server_error", "rate_limited",
               "drop_after_accept", "repeat_trade", "private_repeat", "private_late")
EVENT_FAULTS = ("outages", "frozen_books", "late_fills", "vanishing_orders", "clock_skews",
                "full_disks", "kill_switch", "pauses", "venue_crashes", "ws_drops",
                "public_ws_drops", "public_ws_freezes")
FAULT_KINDS = RATE_FAULTS + EVENT_FAULTS

# How hard the simulated operator trades: the configuration's defaults, or bench/chaos.py's
# aggressive settings (many more orders in flight).
TRADING = ("default", "busy")
# Marketdata's source in the simulated configuration: the public WebSocket with REST
# fallback (the production default), or REST polling only.
MD_SOURCES = ("ws", "rest")
