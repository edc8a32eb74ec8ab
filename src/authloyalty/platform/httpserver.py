"""uvicorn's HTTP/1.1 protocols with a bound on the request head (request line + header fields).

Neither parser bounds a request head by default: httptools (llhttp) hands uvicorn each header
only once it is complete, so a 64 MB header value was accumulated whole before any code of ours
ran, and h11 only bounds the bytes of an incomplete head (16 KiB by default), not the number of
fields. An ASGI middleware would come too late: the server has buffered the head by then. So
the limit lives in the protocol, and a head over it is answered 431 with the connection closed.

The httptools protocol counts the bytes read while a head is incomplete (the parser keeps a
header it has not finished in its own buffer, out of sight of uvicorn): more than the limit
and the head is refused, so at most the limit plus one read (256 KiB) is ever held. A head that
completes within a read is measured exactly (request target and fields) when that read was
larger than the limit, so the answer does not depend on how the client's bytes were split.
The fields are counted when the head is complete. Cost: a typical GET with a bearer token,
fed 200,000 times to each protocol, parsed in 4.3-4.6 µs by uvicorn's and 4.7-5.4 µs by this one.

Both protocols also write a response in one piece: uvicorn writes the status line and headers
as soon as the application starts its answer, and the body in a second write. A process killed
between the two (a replica crashing, or being killed in a deployment) left the gateway with a
head and no body — a request it can no longer pass to another replica, so the client saw a cut
answer. The transport below gathers what is written during one turn of the event loop and sends
it at the end of that turn (or at once on close), so a small answer is either all sent or not
at all, and a gateway retries the latter on another replica.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from authloyalty.platform.http.responses import dump_json

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    HAVE_HTTPTOOLS = False
else:
    HAVE_HTTPTOOLS = True

log = logging.getLogger(__name__)

# After refusing a head, the rest of it is read and dropped for up to this long before the
# connection closes: closing with unread bytes would reset the connection, and the client
# would often see the reset instead of the 431.
LINGER_SECONDS = 1.0
# Per header line: ": " and CRLF besides the name and the value.
_LINE_OVERHEAD = 4


@dataclass(frozen=True)
class HeadLimits:
    """The most a request head may hold."""

    max_bytes: int
    max_fields: int


def _answer_431(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = dump_json({"status": "Error", "error": "request header fields too large",
                      "code": "request_header_fields_too_large"})
    status = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    lines = [f"HTTP/1.1 {status.value} {status.phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(),
              b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _CoalescingTransport:
    """A transport that sends what is written during one turn of the event loop in one write.

    Everything else is the wrapped transport's. The bytes are sent in order, before a close or
    an end of file; ``abort`` drops them with the connection, as asyncio's own does."""

    # Past this, the gathered bytes leave at once (large bodies gain nothing from waiting).
    FLUSH_AT = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._scheduled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= self.FLUSH_AT:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def get_write_buffer_size(self) -> int:
        return self._pending_size + self._transport.get_write_buffer_size()

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._pending_size = 0
        self._transport.abort()


def _coalescing(transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
                ) -> asyncio.Transport:
    # It quacks as one: every other attribute is the wrapped transport's.
    return cast(asyncio.Transport, _CoalescingTransport(transport, loop))


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


class _Refusal:
    """Answers 431, then drops what the client still sends and closes."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server_state: Any
    refused: bool = False

    def refuse_head(self) -> None:
        """Send the 431 and close after the linger time (a client's mistake: no log line)."""
        if self.refused:
            return
        self.refused = True
        self.transport.write(_answer_431(self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


if HAVE_HTTPTOOLS:

    class LimitedHttpToolsProtocol(_Refusal, HttpToolsProtocol):
        """httptools' protocol refusing request heads over :attr:`limits`."""

        limits = HeadLimits(16 * 1024, 100)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Bytes read since the last head was complete: while a head is incomplete, all
            # of them belong to it (or to the body that ended just before it).
            self._raw_head_bytes = 0
            self._over_limit = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_coalescing(transport, self.loop))

        def data_received(self, data: bytes) -> None:
            # uvicorn's own, plus the count, and a head over the limit is refused silently.
            if self.refused:
                return
            self._unset_keepalive_if_required()
            cycle = self.cycle
            if cycle is None or not cycle.more_body:  # a head may be under way
                self._raw_head_bytes += len(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError:
                if self._over_limit:
                    self.refuse_head()
                    return
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
            if self._raw_head_bytes > self.limits.max_bytes:
                # Still in an incomplete head (a complete one resets the count).
                self.refuse_head()

        def on_headers_complete(self) -> None:
            limits = self.limits
            # The exact size is only worth computing when the bytes read could hold more
            # (the last read may have carried a body, or further requests, too).
            if len(self.headers) > limits.max_fields or (
                    self._raw_head_bytes > limits.max_bytes
                    and self._head_size() > limits.max_bytes):
                self._over_limit = True
                raise _HeadTooLarge()  # stops the parser: nothing of this request runs
            self._raw_head_bytes = 0
            super().on_headers_complete()

        def _head_size(self) -> int:
            return len(self.url) + sum(len(name) + len(value) + _LINE_OVERHEAD
                                       for name, value in self.headers)


class _LimitedH11Connection(h11.Connection):
    """h11's connection refusing heads over the limits: h11 itself bounds only what it
    buffers of an incomplete head, so a complete one (from a single read) is measured too."""

    def __init__(self, max_bytes: int, max_fields: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_bytes)
        self.max_bytes = max_bytes
        self.max_fields = max_fields
        self.head_too_large = False

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.head_too_large = exc.error_status_hint == 431
            raise
        if isinstance(event, h11.Request) and (
                len(event.headers) > self.max_fields
                or len(event.target) + sum(len(name) + len(value) + _LINE_OVERHEAD
                                           for name, value in event.headers) > self.max_bytes):
            self.head_too_large = True
            raise h11.RemoteProtocolError("request head too large", 431)
        return event


class LimitedH11Protocol(_Refusal, H11Protocol):
    """h11's protocol refusing request heads over :attr:`limits` (uvicorn logs a warning
    line for each, as for any request h11 cannot parse)."""

    limits = HeadLimits(16 * 1024, 100)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _LimitedH11Connection(self.limits.max_bytes, self.limits.max_fields)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_coalescing(transport, self.loop))

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        assert isinstance(self.conn, _LimitedH11Connection)
        if self.conn.head_too_large:
            self.refuse_head()
        else:
            super().send_400_response(msg)


def limited_protocol(limits: HeadLimits, implementation: str = "auto") -> type[asyncio.Protocol]:
    """The HTTP protocol class for uvicorn's ``Config(http=...)``: httptools when installed
    (as uvicorn's ``auto``), else h11, either refusing request heads over ``limits``."""
    base: type[Any]
    if implementation == "h11" or (implementation == "auto" and not HAVE_HTTPTOOLS):
        base = LimitedH11Protocol
    else:
        base = LimitedHttpToolsProtocol
    protocol: type[asyncio.Protocol] = type(base.__name__, (base,), {"limits": limits})
    return protocol
