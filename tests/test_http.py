"""shared/btcturk/http.py: the lean keep-alive client, against scripted raw servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.btcturk.http import (
    ConnectError,
    ExchangeTimeout,
    HttpPool,
    ResponseLost,
    _Connection,
)

Answer = Callable[[bytes], bytes | None]  # request head+body -> raw answer (None: say nothing)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


def ok(body: bytes = b'{"success":true}', extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def serve(answer: Answer, run: Callable[[str, dict[str, Any]], Awaitable[None]],
                close_after_answer: bool = False) -> dict[str, Any]:
    seen: dict[str, Any] = {"connections": 0, "requests": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        while (request := await _read_request(reader)) is not None:
            seen["requests"].append(request)
            raw = answer(request)
            if raw is None:
                writer.close()
                return
            writer.write(raw)
            await writer.drain()
            if close_after_answer:
                writer.close()
                return
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await run(f"http://127.0.0.1:{port}", seen)
    finally:
        server.close()
    return seen


def test_keep_alive_reuses_one_connection_and_encodes_the_request() -> None:
    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        for i in range(3):
            r = await pool.request("POST", "/api/v1/order", params={"a": str(i)},
                                   headers={"X-PCK": "k"}, body=b'{"x":1}')
            assert (r.status, r.body) == (200, b'{"success":true}')
        pool.close()

    seen = asyncio.run(serve(lambda req: ok(), run))
    assert seen["connections"] == 1
    first = seen["requests"][0].decode()
    assert first.startswith("POST /api/v1/order?a=0 HTTP/1.1\r\n")
    assert "\r\nX-PCK: k\r\n" in first and "\r\nContent-Length: 7\r\n" in first
    assert first.endswith('\r\n\r\n{"x":1}')


def test_an_idle_connection_is_written_before_the_caller_first_yields() -> None:
    """The order path relies on it: the bytes are on the socket in the caller's step."""
    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        await pool.request("GET", "/warm")
        conn = pool._idle[-1]
        task = asyncio.ensure_future(pool.request("POST", "/order", body=b"{}"))
        await asyncio.sleep(0)  # exactly one step of the task
        assert conn._waiter is not None and not conn._waiter.done()
        assert conn.transport is not None and not pool._idle
        await task
        pool.close()

    asyncio.run(serve(lambda req: ok(), run))


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        for _ in range(3):
            assert (await pool.request("GET", "/x")).status == 200
            await asyncio.sleep(0.05)  # the server's FIN arrives while idle
        pool.close()

    seen = asyncio.run(serve(lambda req: ok(), run, close_after_answer=True))
    assert seen["connections"] == 3


def test_connection_close_and_http10_answers_are_not_kept() -> None:
    http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    answers = iter([ok(extra="Connection: close\r\n"), http10, ok()])

    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        for _ in range(3):
            assert (await pool.request("GET", "/x")).status == 200
        pool.close()

    seen = asyncio.run(serve(lambda req: next(answers), run))
    assert seen["connections"] == 3


def test_body_until_close_and_no_content() -> None:
    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        assert (await pool.request("GET", "/close")).body == b"all of it"
        r = await pool.request("DELETE", "/x")
        assert (r.status, r.body) == (204, b"")
        pool.close()

    def answer(req: bytes) -> bytes:
        if req.startswith(b"GET /close"):
            return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    asyncio.run(serve(answer, run, close_after_answer=True))


@pytest.mark.parametrize("raw", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server closes
])
def test_a_malformed_or_cut_answer_is_response_lost(raw: bytes) -> None:
    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        with pytest.raises(ResponseLost):
            await pool.request("POST", "/order", body=b"{}", timeout_s=2)
        assert not pool._idle
        pool.close()

    asyncio.run(serve(lambda req: raw, run, close_after_answer=True))


def test_no_answer_is_a_timeout_and_a_dropped_request_is_lost() -> None:
    async def silent(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        with pytest.raises(ExchangeTimeout):
            await pool.request("POST", "/order", body=b"{}", timeout_s=0.2)
        pool.close()

    async def hang_up(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        with pytest.raises(ResponseLost):
            await pool.request("POST", "/order", body=b"{}", timeout_s=2)
        pool.close()

    async def slow_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def go() -> None:
        server = await asyncio.start_server(slow_server, "127.0.0.1", 0)
        await silent(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", {})
        server.close()

    asyncio.run(go())
    seen = asyncio.run(serve(lambda req: None, hang_up))
    assert len(seen["requests"]) == 1  # it was written: the outcome is unknown, not "unsent"


def test_refused_connect_is_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed

    async def go() -> None:
        pool = HttpPool(f"http://127.0.0.1:{port}", connect_timeout_s=1)
        with pytest.raises(ConnectError):
            await pool.request("GET", "/x")

    asyncio.run(go())
    with pytest.raises(ValueError):
        HttpPool("ftp://example.com")


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(1, 400), max_size=12),
       chunk=st.integers(1, 700), chunked=st.booleans())
def test_parser_reassembles_any_split_of_an_answer(body: bytes, cuts: list[int], chunk: int,
                                                   chunked: bool) -> None:
    """Property: however TCP splits an answer (chunked or not), the body comes out whole."""
    if chunked:
        parts = [body[i:i + chunk] for i in range(0, len(body), chunk)]
        payload = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + payload
    else:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def go() -> bytes:
        conn = _Connection()
        conn._waiter = asyncio.get_running_loop().create_future()
        pos = 0
        for cut in [*cuts, len(raw)]:
            conn.data_received(raw[pos:pos + cut])
            pos += cut
            if pos >= len(raw):
                break
        if pos < len(raw):
            conn.data_received(raw[pos:])
        assert conn._waiter.done()
        return conn._waiter.result().body

    assert asyncio.run(go()) == body


def test_an_old_idle_connection_is_replaced_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past IDLE_TTL_S a write could race the server's keep-alive close: a new one."""
    import shared.btcturk.http as http

    monkeypatch.setattr(http, "IDLE_TTL_S", 0.05)

    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        await pool.request("GET", "/x")
        await pool.request("GET", "/x")  # at once: reused
        await asyncio.sleep(0.1)
        await pool.request("GET", "/x")  # too old: replaced
        pool.close()

    seen = asyncio.run(serve(lambda req: ok(), run))
    assert seen["connections"] == 2


def test_data_nobody_asked_for_retires_the_connection() -> None:
    """Bytes beyond the answer (in the same read, or arriving while idle) mean the
    stream cannot be trusted: that connection is never used again."""
    async def run(url: str, seen: dict[str, Any]) -> None:
        pool = HttpPool(url)
        with pytest.raises(ResponseLost):
            await pool.request("GET", "/twice")  # two answers to one request
        assert not pool._idle
        assert (await pool.request("GET", "/x")).status == 200
        pool.close()

    seen = asyncio.run(serve(lambda req: ok() + ok() if b"/twice" in req else ok(), run))
    assert seen["connections"] == 2

    async def stray(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(ok())
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\n")  # unasked, while the connection is idle
        await asyncio.sleep(1)

    async def go() -> None:
        server = await asyncio.start_server(stray, "127.0.0.1", 0)
        pool = HttpPool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        assert (await pool.request("GET", "/x")).status == 200
        assert len(pool._idle) == 1
        await asyncio.sleep(0.2)
        assert pool._take_idle() is None  # retired
        pool.close()
        server.close()

    asyncio.run(go())
