"""Signing known answers, stamp monotonicity and header shape."""

from __future__ import annotations

import base64
import hashlib
import hmac

from shared.btcturk.auth import StampClock, auth_headers, sign, verify

SECRET_BYTES = bytes(range(32))
SECRET_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PUBLIC_KEY = "my-public-key"
STAMP = 1700000000000


def test_secret_fixture_is_base64_of_bytes() -> None:
    assert base64.b64decode(SECRET_B64) == SECRET_BYTES


def test_sign_matches_independent_hmac() -> None:
    expected = base64.b64encode(
        hmac.new(SECRET_BYTES, f"{PUBLIC_KEY}{STAMP}".encode(), hashlib.sha256).digest()
    ).decode()
    assert sign(PUBLIC_KEY, SECRET_B64, STAMP) == expected


def test_sign_pinned_literal() -> None:
    # Pinned so a refactor cannot silently change the algorithm (e.g. stop base64-decoding
    # the secret, the BtcTurk.Net bug noted in the reference).
    assert sign(PUBLIC_KEY, SECRET_B64, STAMP) == "BRMn1QH5xYJFVyynuBy6vwWRA2MVEdugzxNyflLaIvE="
    assert sign(PUBLIC_KEY, SECRET_B64, 3000) == "FFYL3Quyk2XsQcWa9AR/WAsn5Kg2rn0D19y7VBFx2OA="


def test_stamp_as_int_or_str_is_the_same_message() -> None:
    assert sign(PUBLIC_KEY, SECRET_B64, STAMP) == sign(PUBLIC_KEY, SECRET_B64, str(STAMP))


def test_verify_roundtrip_and_rejections() -> None:
    sig = sign(PUBLIC_KEY, SECRET_B64, STAMP)
    assert verify(PUBLIC_KEY, SECRET_B64, str(STAMP), sig)
    assert not verify(PUBLIC_KEY, SECRET_B64, str(STAMP + 1), sig)
    assert not verify("other", SECRET_B64, str(STAMP), sig)
    assert not verify(PUBLIC_KEY, SECRET_B64, str(STAMP), "not base64!!")


def test_auth_headers_shape() -> None:
    headers = auth_headers(PUBLIC_KEY, SECRET_B64, STAMP)
    assert headers == {
        "X-PCK": PUBLIC_KEY,
        "X-Stamp": str(STAMP),
        "X-Signature": "BRMn1QH5xYJFVyynuBy6vwWRA2MVEdugzxNyflLaIvE=",
    }


def test_stamps_strictly_increase_even_when_called_fast() -> None:
    clock = StampClock()
    stamps = [clock.next_stamp() for _ in range(5000)]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))


def test_stamp_offset_applied() -> None:
    clock = StampClock()
    plain = clock.next_stamp()
    clock.offset_ms = 60_000
    assert clock.next_stamp() >= plain + 60_000
