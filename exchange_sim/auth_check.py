"""Server-side check of BTCTurk API-key headers, as the exchange does it.

Refusals (HTTP 401; ``success`` is true in BTCTurk's real 401 bodies, a documented quirk):
missing headers, unknown key, bad signature, a stamp more than 5 s from server time,
and a reused stamp. Non-increasing stamps are refused when older than the reorder window
(``nonce_window_ms``): concurrent requests of one client legitimately arrive out of order
over several connections, so a strict "greater than the last" rule would reject them.
``nonce_window_ms=0`` gives the strict rule.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.btcturk.auth import verify

STAMP_TOLERANCE_MS = 5000


class AuthFailure(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _NonceBook:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.max_seen = 0

    def accept(self, stamp: int, window_ms: int) -> bool:
        if stamp in self.seen or stamp < self.max_seen - window_ms:
            return False
        self.seen.add(stamp)
        if stamp > self.max_seen:
            self.max_seen = stamp
        if len(self.seen) > 4096:
            # Older stamps are refused by the window rule anyway; forget them.
            floor = self.max_seen - window_ms
            self.seen = {s for s in self.seen if s >= floor}
        return True


class AuthChecker:
    def __init__(self, credentials: dict[str, str], nonce_window_ms: int = 1000) -> None:
        self.credentials = dict(credentials)
        self.nonce_window_ms = nonce_window_ms
        self._nonces: dict[str, _NonceBook] = {}

    def reset(self) -> None:
        self._nonces.clear()

    def check(self, headers: Mapping[str, str], now_ms: int) -> str:
        """Return the API key, or raise AuthFailure with BTCTurk's message."""
        key, stamp_text, signature = (
            headers.get("X-PCK"),
            headers.get("X-Stamp"),
            headers.get("X-Signature"),
        )
        if not key or not stamp_text or not signature:
            raise AuthFailure("Unauthorized - Headers are missing", 1039)
        secret = self.credentials.get(key)
        if secret is None:
            raise AuthFailure("Unauthorized - Invalid Request", 1040)
        try:
            stamp = int(stamp_text)
        except ValueError as exc:
            raise AuthFailure("Unauthorized - Invalid Nonce", 1037) from exc
        if not verify(key, secret, stamp_text, signature):
            raise AuthFailure("Unauthorized - Invalid Signature", 1038)
        if abs(stamp - now_ms) > STAMP_TOLERANCE_MS:
            raise AuthFailure("Unauthorized - Invalid Nonce", 1037)
        if not self._nonces.setdefault(key, _NonceBook()).accept(stamp, self.nonce_window_ms):
            raise AuthFailure("Unauthorized - Invalid Nonce", 1037)
        return key

    def check_ws_login(self, public_key: str, nonce: str, signature: str) -> bool:
        secret = self.credentials.get(public_key)
        return secret is not None and verify(public_key, secret, nonce, signature)
