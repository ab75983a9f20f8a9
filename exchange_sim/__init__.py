"""Loopback BTCTurk simulator: REST + WebSocket, matching engine, fault injection."""

from .app import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    SimHandle,
    SimOptions,
    Simulator,
    start_simulator,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "SimHandle",
    "SimOptions",
    "Simulator",
    "start_simulator",
]
