"""BTCTurk API-key signing (REST "Authentication V1" and WebSocket login 114).

signature = Base64(HMAC_SHA256(key=Base64Decode(secret), msg=UTF8(public_key + stamp)))
Only the key and the stamp are signed: no method, path or body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time


def sign(public_key: str, secret_b64: str, stamp: int | str) -> str:
    """Signature for ``public_key + str(stamp)``; also used for the WS login (stamp=nonce)."""
    key = base64.b64decode(secret_b64)
    digest = hmac.new(key, f"{public_key}{stamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(public_key: str, secret_b64: str, stamp: str, signature_b64: str) -> bool:
    """Constant-time check of a presented signature (used by the simulator)."""
    try:
        presented = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = base64.b64decode(sign(public_key, secret_b64, stamp))
    return hmac.compare_digest(presented, expected)


def is_valid_secret(secret_b64: str) -> bool:
    """BTCTurk secrets are base64; a non-base64 secret can never produce a valid signature."""
    try:
        base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class StampClock:
    """Millisecond nonces that are strictly increasing and corrected by the server offset.

    BTCTurk rejects a nonce it has already seen and one more than 5 s away from its clock,
    so we add the measured offset and never hand out the same value twice. Thread-safe
    because a client may be shared by threads in tests.
    """

    def __init__(self) -> None:
        self.offset_ms = 0
        self._last = 0
        self._lock = threading.Lock()

    def next_stamp(self) -> int:
        with self._lock:
            now = int(time.time() * 1000) + self.offset_ms
            self._last = max(now, self._last + 1)
            return self._last


def auth_headers(public_key: str, secret_b64: str, stamp: int) -> dict[str, str]:
    """The three headers every private REST call carries."""
    return {
        "X-PCK": public_key,
        "X-Stamp": str(stamp),
        "X-Signature": sign(public_key, secret_b64, stamp),
    }
