"""One port, two protocols: TLS for peers, plain HTTP for the node's own browser and CLI.

Peers always reach a node over TLS (its certificate's fingerprint travels in
its signed announcement, and they pin it), while ``http://127.0.0.1:37778/``
keeps working in a local browser with no warning. The listener accepts each
connection itself and looks at its first byte without taking it
(``MSG_PEEK``): a TLS handshake starts with 0x16, an HTTP request with a
letter. The connection is then handed to aiohttp's server as it is, or with
TLS set up (``loop.connect_accepted_socket``). A connection that sends nothing
within ``FIRST_BYTE`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from aiohttp import web

log = logging.getLogger(__name__)

FIRST_BYTE = 10.0
TLS_HANDSHAKE = 0x16
BACKLOG = 128


class DualListener:
    def __init__(self, runner: web.BaseRunner, tls: ssl.SSLContext) -> None:
        self.runner = runner
        self.tls = tls
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (raises OSError when it cannot)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        sock.setblocking(False)
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept(), name="accept")

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # too many open files, say: wait, then go on
                log.warning("cannot accept a connection: %s", exc)
                await asyncio.sleep(0.5)
                continue
            task = loop.create_task(self._hand_over(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            first = await asyncio.wait_for(_peek(loop, conn), FIRST_BYTE)
            tls = self.tls if first and first[0] == TLS_HANDSHAKE else None
            server = self.runner.server
            if not first or server is None:
                conn.close()
                return
            await loop.connect_accepted_socket(server, conn, ssl=tls)
        except (OSError, TimeoutError, ssl.SSLError) as exc:  # gone, silent, or a bad handshake
            log.debug("connection dropped before a request: %s", exc or type(exc).__name__)
            conn.close()

    async def stop(self) -> None:
        """Stop accepting (the connections are aiohttp's to close); idempotent."""
        tasks = [t for t in (self._accepting, *self._handshakes) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The connection's first byte, left in place for whoever reads it next."""
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(fd)
    return conn.recv(1, socket.MSG_PEEK)
