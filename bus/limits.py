"""Size and clock bounds enforced at the edge of every socket.

One place for the numbers, so the proxy, every subscriber, the command servers and
the message schema agree on them (docs/security.md lists them).
"""

from __future__ import annotations

# A topic is a dotted name such as ``md.book.BTCTRY``; nothing legitimate comes close.
MAX_TOPIC_BYTES = 128
# The largest legitimate payload is a PortfolioSnapshot with MAX_LIST_LEN open orders
# (a few hundred bytes each); anything bigger is refused before it is decoded.
MAX_PAYLOAD_BYTES = 1 << 20
# libzmq refuses (and disconnects) above this, before Python ever sees the bytes.
MAX_WIRE_BYTES = 2 * MAX_PAYLOAD_BYTES

MAX_STR_LEN = 256  # names, ids, symbols, states
MAX_REASON_LEN = 8_192  # reasons, error messages, paths
MAX_TEXT_LEN = MAX_PAYLOAD_BYTES  # a whole document (the status JSON)
MAX_LIST_LEN = 1_000  # book levels, open orders, reasons, positions...
MAX_MAP_LEN = 1_000  # counters

# A sender's stamp may be ahead of our clock by at most this much; more is a forged or
# broken clock and the message is refused (a stamp far in the future would otherwise
# look fresh for as long as it stays ahead).
DEFAULT_MAX_FUTURE_SKEW_NS = 2_000_000_000
