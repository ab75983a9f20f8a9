"""A lean HTTP/1.1 client for the exchange's REST API.

Keep-alive connections, one request at a time on each, and a request is written to the
socket synchronously, in the caller's own step, whenever a connection is idle. That is
the point of this module: the order POST sits on the tick-to-order path, and a general
client (aiohttp) spends ~0.3 ms of Python and several event-loop turns before the bytes
leave. aiohttp still serves WebSockets and the simulator.

What callers rely on (BtcTurkClient maps these onto its error taxonomy):
- ``ConnectError``: the request was never written (refused, unreachable, connect or TLS
  timeout). Always safe to retry.
- ``ExchangeTimeout`` / ``ResponseLost``: the request was written (or may have been)
  and no complete, well-formed answer came: the outcome is unknown.
- Only identity bodies: no Accept-Encoding is sent, and a compressed answer is refused
  (``ResponseLost``) rather than decoded by guesswork.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urlsplit

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# An idle connection older than this is closed rather than reused: well under the
# keep-alive timeout of common servers (60-75 s), so a write never races the server's
# close of a connection it considers idle.
IDLE_TTL_S = 15.0
MAX_IDLE = 8


class ConnectError(Exception):
    """No connection could be made: nothing was sent."""


class ExchangeTimeout(Exception):
    """No complete answer in time; the request had been written."""


class ResponseLost(Exception):
    """The connection broke, or the answer was malformed, after the request was written."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the parser of the answer to its current request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, dict[str, str]] | None = None
        self._body_start = 0
        self._length: int | None = None  # Content-Length, or None
        self._chunked = False
        self._until_close = False
        self._chunks: list[bytes] = []
        self._chunk_pos = 0
        self.keep_alive = True

    # --- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # an answer nobody asked for: this connection cannot be trusted
            return
        self._buf += data
        try:
            response = self._parse()
        except ValueError as exc:
            self._fail(ResponseLost(f"malformed HTTP response: {exc}"))
            return
        if response is not None:
            self._waiter.set_result(response)

    def eof_received(self) -> bool:
        self._closed_by_peer()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed_by_peer(exc)

    # --- requests -----------------------------------------------------------------------
    def send(self, request: bytes) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None and not self.closed
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def timed_out(self, after_s: float) -> None:
        self._fail(ExchangeTimeout(f"no complete answer within {after_s:g}s"))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.abort()

    def _closed_by_peer(self, exc: Exception | None = None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._until_close and self._head is not None:
            status, headers = self._head
            waiter.set_result(HttpResponse(status, headers, bytes(self._buf[self._body_start:])))
            return
        why = f": {exc}" if exc else ""
        waiter.set_exception(ResponseLost(f"connection closed before a complete answer{why}"))

    # --- parsing --------------------------------------------------------------------------
    def _parse(self) -> HttpResponse | None:
        if len(self._buf) > MAX_RESPONSE_BYTES:
            raise ValueError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        if self._head is None and not self._parse_head():
            return None
        assert self._head is not None
        status, headers = self._head
        if self._chunked:
            body = self._parse_chunks()
        elif self._length is not None:
            end = self._body_start + self._length
            body = bytes(self._buf[self._body_start:end]) if len(self._buf) >= end else None
            if body is not None and len(self._buf) > end:
                raise ValueError("data after the answer")
        else:
            return None  # until close: connection_lost completes it
        return None if body is None else HttpResponse(status, headers, body)

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 64 * 1024:
                raise ValueError("header section too large")
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"bad status line {lines[0][:80]!r}")
        code = rest[:3]
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"bad status line {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200:
            raise ValueError(f"unexpected interim answer {status}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ValueError(f"bad header line {line[:80]!r}")
            headers[name.lower()] = value.strip()
        self._head = (status, headers)
        self._body_start = end + 4
        self._chunk_pos = self._body_start
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise ValueError(f"content-encoding {encoding} (none was accepted)")
        connection = headers.get("connection", "").lower()
        self.keep_alive = version == "HTTP/1.1" and "close" not in connection
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise ValueError(f"bad content-length {length!r}")
            self._length = int(length)
        elif status in (204, 304):
            self._length = 0
        else:
            self._until_close = True
            self.keep_alive = False
        return True

    def _parse_chunks(self) -> bytes | None:
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n", self._chunk_pos)
            if line_end < 0:
                return None
            size_text = bytes(buf[self._chunk_pos:line_end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                # The last chunk; trailers (none expected) end with an empty line.
                if buf.find(b"\r\n\r\n", line_end) < 0:
                    return None
                return b"".join(self._chunks)
            data_end = line_end + 2 + size
            if len(buf) < data_end + 2:
                return None
            if buf[data_end:data_end + 2] != b"\r\n":
                raise ValueError("chunk without its CRLF")
            self._chunks.append(bytes(buf[line_end + 2:data_end]))
            self._chunk_pos = data_end + 2


class HttpTransport(Protocol):
    """What BtcTurkClient needs of HTTP: one exchange, the taxonomy above on failure."""

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None, body: bytes | None = None,
        timeout_s: float = 5.0,
    ) -> HttpResponse: ...

    def close(self) -> None: ...


class HttpPool:
    """Keep-alive connections to one origin (``http://`` or ``https://``)."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 2.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc if not default_port else self.host
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None, body: bytes | None = None,
        timeout_s: float = 5.0,
    ) -> HttpResponse:
        """One exchange. With an idle connection the request is on the socket before
        this coroutine first yields."""
        request = self._encode(method, path, params, headers or {}, body)
        conn = self._take_idle() or await self._connect()
        loop = asyncio.get_running_loop()
        waiter = conn.send(request)
        deadline = loop.call_later(timeout_s, conn.timed_out, timeout_s)
        try:
            response = await waiter
        except BaseException:
            conn.abort()  # cancelled or failed mid-answer: the connection's state is unknown
            raise
        finally:
            deadline.cancel()
        self._release(conn)
        return response

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()

    def _encode(self, method: str, path: str, params: dict[str, str] | None,
                headers: dict[str, str], body: bytes | None) -> bytes:
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        for name, value in headers.items():
            if any(c in name or c in value for c in "\r\n"):
                raise ValueError(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and now - conn.idle_since < IDLE_TTL_S:
                return conn
            conn.abort()
        return None

    def _release(self, conn: _Connection) -> None:
        if conn.closed or not conn.keep_alive or len(self._idle) >= MAX_IDLE:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, self.host, self.port, ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self.connect_timeout_s,
            )
        except TimeoutError as exc:
            raise ConnectError(f"connect timeout ({self.connect_timeout_s:g}s)") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return conn
