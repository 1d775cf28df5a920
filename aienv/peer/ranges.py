"""Archive ranges read into one buffer per connection: ``RangeReader``.

Nearly every byte a clone receives is the body of a range answer. Through
aiohttp each 16 KiB TLS record became a bytes object, passed through its
protocol, parser and stream reader, and was joined with others into the chunk
the caller asked for. Here an ``asyncio.BufferedProtocol`` has asyncio's TLS
layer decrypt straight into a 1 MiB buffer, and the caller's ``sink`` is given
a view of it each time it fills (or the body ends), on the event loop, before
the buffer is reused: one Python call per MiB, not several per record.

It speaks just the HTTP/1.1 a node's range answer needs: one ``GET`` at a time
per connection, a status line, headers, a body of ``Content-Length`` bytes;
connections are kept alive and reused per (peer URL, pinned certificate). A
connection is pinned as ``Link`` says (the sha256 of the certificate the peer
presents, checked before anything is sent); an answer other than 206 is
mapped to the same errors as every other request (``refusal``); its few words
are read past, so the connection serves the next request (a peer refusing a
piece it lacks yet is common in a swarm). A peer silent for ``read_timeout`` seconds
fails the request; so does one that closes mid-body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import Callable, Mapping
from functools import partial

from aienv.errors import AienvError, PeerImpostor, PeerUnreachable, TransferError
from aienv.peer.link import Link, pin_mismatch, split_host_port, unreachable

BUFFER = 1024 * 1024  # bytes decrypted into before the sink is called
MAX_HEAD = 64 * 1024  # a status line and headers longer than this are refused
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
KEEP = 4  # idle connections kept per peer (each holds its buffer)

Sink = Callable[[memoryview], None]  # takes a view valid only during the call
Refusal = Callable[[int, Mapping[str, str]], AienvError | None]


class _Answer(asyncio.BufferedProtocol):
    """One connection: one request at a time, its answer's body handed to a sink."""

    def __init__(self, forget: Callable[[_Answer], None]) -> None:
        self.forget = forget  # drops it from the reader's idle connections
        self.buffer = memoryview(bytearray(BUFFER))
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last = 0.0  # loop time of the last bytes received
        self._begin = 0  # where the undelivered body starts in the buffer
        self._filled = 0
        self._left = 0  # body bytes still to come
        self._head = True
        self._sink: Sink = _ignore
        self._range = ""  # the Content-Range asked for, without its "/size"
        self._done: asyncio.Future[tuple[int, dict[str, str]]] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received = 0  # bytes of the current answer, head included
        self.sink_failed = False  # the request ended by the sink's own error

    # -- asyncio's side -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.last = asyncio.get_running_loop().time()
        self.received += nbytes
        self._filled += nbytes
        try:
            if self._head and not self._read_head():
                return
            body = self._filled - self._begin
            if body > self._left:
                raise TransferError("the peer sent more bytes than its answer's length")
            if self._filled == len(self.buffer) or body == self._left:
                self._left -= body
                if body:
                    self.sink_failed = True
                    self._sink(self.buffer[self._begin : self._filled])
                    self.sink_failed = False
                self._begin = self._filled = 0
                if self._left == 0:
                    self._finish(None)
        except BaseException as exc:  # the sink's own errors too: they end this request
            self._finish(exc)
            self.close()

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost says the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.forget(self)  # its buffer goes with it
        self._finish(exc or ConnectionResetError("the peer closed the connection"))

    # -- the request's side -------------------------------------------------------

    def ask(
        self, request: bytes, sink: Sink, content_range: str
    ) -> asyncio.Future[tuple[int, dict[str, str]]]:
        assert self.transport is not None and self._done is None
        self._range = content_range
        self._done = asyncio.get_running_loop().create_future()
        self._sink, self._head, self._begin, self._filled = sink, True, 0, 0
        self.status, self.headers, self.received, self.sink_failed = 0, {}, 0, False
        self.last = asyncio.get_running_loop().time()
        self.transport.write(request)
        return self._done

    def _read_head(self) -> bool:
        """Parse the status line and headers once they are all in; False until then."""
        raw = self.buffer[: self._filled].tobytes()
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            if self._filled >= MAX_HEAD:
                raise TransferError("the peer's answer has no end of headers")
            return False
        lines = raw[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise TransferError(f"the peer answered {lines[0][:80]!r}, not HTTP")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                self.headers[name.strip().lower()] = value.strip()
        length = self.headers.get("content-length", "")
        if self.status != 206:  # a refusal: its few words are read past, to keep the line
            if not length.isdigit() or int(length) > MAX_HEAD:
                self._finish(None)  # or the connection is closed, not read to its end
                raise _Stop
            self._sink = _discard
        else:
            if not length.isdigit():
                raise TransferError("the peer's range answer gives no length")
            got = self.headers.get("content-range", "").split("/")[0]
            if got != self._range:
                raise TransferError(
                    f"the peer answered with {got or 'no range'}, not {self._range}"
                )
        self._head, self._begin, self._left = False, end + 4, int(length)
        return True

    def _finish(self, exc: BaseException | None) -> None:
        done, self._done, self._sink = self._done, None, _ignore
        if done is None or done.done():
            return
        if exc is None:
            done.set_result((self.status, self.headers))
        elif not isinstance(exc, _Stop):
            done.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Stop(Exception):
    """The head was read and the rest is not wanted."""


def _discard(view: memoryview) -> None:
    pass


def _ignore(view: memoryview) -> None:
    raise TransferError("bytes arrived while no request was waiting for them")


def _context() -> ssl.SSLContext:
    """TLS without a CA: the peer's certificate is checked by its pin instead."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class RangeReader:
    """Kept-alive connections to peers, for range answers. ``close`` is idempotent."""

    def __init__(self, read_timeout: float = READ_TIMEOUT) -> None:
        self.read_timeout = read_timeout
        self._idle: dict[tuple[str, str | None], list[_Answer]] = {}
        self._context: ssl.SSLContext | None = None

    async def close(self) -> None:
        for answers in self._idle.values():
            for answer in answers:
                answer.close()
        self._idle.clear()

    async def fetch(
        self,
        link: Link,
        path: str,
        headers: Mapping[str, str],
        what: str,
        sink: Sink,
        refusal: Refusal,
        *,
        content_range: str,
    ) -> None:
        """GET ``path`` of ``link``; the body of its 206 answer for ``content_range``
        (``bytes A-B``), in order, into ``sink``.
        Raises ``refusal``'s error for another status, ``PeerImpostor`` for a
        certificate other than the pinned one, ``PeerUnreachable`` when the peer
        cannot be reached, falls silent or hangs up; and whatever ``sink`` raises."""
        key = (link.url, link.fingerprint)
        address = link.url.partition("://")[2]
        lines = [f"GET {path} HTTP/1.1", f"Host: {address}", *_header_lines(link, headers)]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for reused in (True, False):
            answer = self._take(key) if reused else None
            if reused and answer is None:
                continue
            if answer is None:
                answer = await self._connect(key, link, what)
            try:
                asked = answer.ask(request, sink, content_range)
                status, got = await self._wait(answer, asked, link, what)
            except PeerUnreachable:
                answer.close()
                if reused and answer.received == 0:  # it closed while idle: once more, anew
                    continue
                raise
            except BaseException:
                answer.close()
                raise
            self._keep(key, answer, got)  # its body was read: the line is free again
            if status != 206:
                error = refusal(status, got)
                raise error or TransferError(f"{link.host} answered HTTP {status} for {what}")
            return

    def _take(self, key: tuple[str, str | None]) -> _Answer | None:
        idle = self._idle.get(key, [])
        while idle:
            answer = idle.pop()
            if not answer.closed:
                return answer
        return None

    def _forget(self, key: tuple[str, str | None], answer: _Answer) -> None:
        idle = self._idle.get(key, [])
        if answer in idle:
            idle.remove(answer)
        if not idle:
            self._idle.pop(key, None)

    def _keep(self, key: tuple[str, str | None], answer: _Answer, headers: dict[str, str]) -> None:
        idle = self._idle.setdefault(key, [])
        if answer.closed or headers.get("connection", "").lower() == "close" or len(idle) >= KEEP:
            answer.close()
        else:
            idle.append(answer)

    async def _connect(self, key: tuple[str, str | None], link: Link, what: str) -> _Answer:
        scheme, _, address = link.url.partition("://")
        host, port = split_host_port(address, 80)
        secure = scheme == "https"
        if secure and self._context is None:
            self._context = _context()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                transport, answer = await loop.create_connection(
                    lambda: _Answer(partial(self._forget, key)),
                    host,
                    port,
                    ssl=self._context if secure else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise unreachable(link, what, exc) from exc
        if secure and link.fingerprint:
            der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            got = hashlib.sha256(der or b"").digest()
            expected = bytes.fromhex(link.fingerprint)
            if got != expected:
                transport.abort()
                raise PeerImpostor(pin_mismatch(link.url, expected, got))
        return answer

    async def _wait(
        self,
        answer: _Answer,
        done: asyncio.Future[tuple[int, dict[str, str]]],
        link: Link,
        what: str,
    ) -> tuple[int, dict[str, str]]:
        """The answer's status and headers once its body is all in; a stall or a
        hang-up is the peer's ``PeerUnreachable``."""
        loop = asyncio.get_running_loop()
        while True:
            wait = answer.last + self.read_timeout - loop.time()
            if wait <= 0:
                raise unreachable(link, what, TimeoutError())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    try:
                        return await asyncio.shield(done)
                    except OSError as exc:  # ssl.SSLError and ConnectionError among them
                        if answer.sink_failed:  # a full disk is not the peer's fault
                            raise
                        raise unreachable(link, what, exc) from exc


def _header_lines(link: Link, headers: Mapping[str, str]) -> list[str]:
    merged = {**link.headers(), **headers}
    return [f"{name}: {value}" for name, value in merged.items()]
