"""The range reader against a real aiohttp server over TLS: the bytes of a range in
order, kept-alive connections, the pin checked before anything is asked, refusals
mapped like every other request, and a peer that hangs up, falls silent, sends the
wrong range or keeps an idle connection only so long."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from aienv.errors import Busy, PeerImpostor, PeerUnreachable, RangeNotHeld, TransferError
from aienv.peer.client import PeerClient, refusal
from aienv.peer.link import Link
from aienv.peer.ranges import BUFFER, RangeReader
from aienv.security.tls import ensure_certificate

DIGEST = "ab" * 32
PATH = f"/api/v1/archives/{DIGEST}"
DATA = os.urandom(3 * BUFFER + 12345)
KEEPALIVE = 1.0  # seconds the server keeps an idle connection

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    link: Link
    ports: list[int] = field(default_factory=list)  # the client's port, per request
    handler: list[Handler] = field(default_factory=list)


async def _ranges(request: web.Request) -> web.StreamResponse:
    first, last = request.headers["Range"].removeprefix("bytes=").split("-")
    start, end = int(first), int(last) + 1
    resp = web.StreamResponse(status=206)
    resp.content_length = end - start
    resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(DATA)}"
    await resp.prepare(request)
    for at in range(start, end, 100_000):  # in several writes, as a node sends
        await resp.write(DATA[at : min(at + 100_000, end)])
    return resp


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    cert = ensure_certificate(tmp_path / "tls", "seeder")
    served = Server(Link("https://127.0.0.1:0", cert.fingerprint), handler=[_ranges])

    async def answer(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        served.ports.append(request.transport.get_extra_info("peername")[1])
        return await served.handler[0](request)

    app = web.Application()
    app.router.add_get(PATH, answer)
    runner = web.AppRunner(app, keepalive_timeout=KEEPALIVE)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cert.server_context())
    await site.start()
    port = runner.addresses[0][1]
    served.link = Link(f"https://127.0.0.1:{port}", cert.fingerprint)
    try:
        yield served
    finally:
        await runner.cleanup()


def _collect(into: bytearray, sizes: list[int]) -> Callable[[memoryview], None]:
    def sink(view: memoryview) -> None:
        sizes.append(len(view))
        into.extend(view)

    return sink


async def _fetch(reader: RangeReader, link: Link, start: int, end: int, sink: object) -> None:
    headers = {"Range": f"bytes={start}-{end - 1}"}
    await reader.fetch(
        link,
        PATH,
        headers,
        "the archive",
        sink,  # type: ignore[arg-type]
        lambda status, h: refusal(status, h, link, "the archive"),
        content_range=f"bytes {start}-{end - 1}",
    )


async def test_a_range_arrives_whole_in_order_on_one_kept_connection(server: Server) -> None:
    reader = RangeReader()
    try:
        got, sizes = bytearray(), []
        await _fetch(reader, server.link, 7, len(DATA) - 3, _collect(got, sizes))
        assert bytes(got) == DATA[7:-3]
        assert max(sizes) == BUFFER and len(sizes) == 4  # a view per full buffer, and the rest
        again = bytearray()
        await _fetch(reader, server.link, 100, 200, _collect(again, []))
        assert bytes(again) == DATA[100:200]
        assert len(set(server.ports)) == 1  # one TLS handshake for both
    finally:
        await reader.close()


async def test_a_certificate_other_than_the_pinned_one_gets_nothing(server: Server) -> None:
    reader = RangeReader()
    wrong = Link(server.link.url, "cd" * 32)
    try:
        with pytest.raises(PeerImpostor, match="not the one its signed announcement names"):
            await _fetch(reader, wrong, 0, 10, _collect(bytearray(), []))
        assert server.ports == []  # nothing was asked
    finally:
        await reader.close()


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [(503, {"Retry-After": "2"}, Busy), (409, {}, RangeNotHeld), (500, {}, TransferError)],
)
async def test_refusals_map_as_for_every_request(
    server: Server, status: int, headers: dict[str, str], error: type[Exception]
) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": "x"}}, status=status, headers=headers)

    server.handler[0] = refuse
    client = PeerClient()
    try:
        got = bytearray()
        with pytest.raises(error) as caught:
            await client.archive_range(server.link, DIGEST, 0, 10, _collect(got, []))
        assert got == bytearray()
        if status == 503:
            assert caught.value.retry_after == 2.0  # type: ignore[attr-defined]
        server.handler[0] = _ranges  # the refusal was read past: the connection serves on
        await client.archive_range(server.link, DIGEST, 0, 10, _collect(got, []))
        assert bytes(got) == DATA[:10] and len(set(server.ports)) == 1
    finally:
        await client.close()


async def test_a_wrong_range_a_hang_up_and_silence_fail_the_request(server: Server) -> None:
    async def shifted(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=206)
        resp.content_length = 10
        resp.headers["Content-Range"] = f"bytes 1-10/{len(DATA)}"
        await resp.prepare(request)
        await resp.write(DATA[1:11])
        return resp

    async def hang_up(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=206)
        resp.content_length = 1000
        resp.headers["Content-Range"] = f"bytes 0-999/{len(DATA)}"
        await resp.prepare(request)
        await resp.write(DATA[:500])
        assert request.transport is not None
        request.transport.close()
        return resp

    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response()

    reader = RangeReader(read_timeout=0.3)
    try:
        server.handler[0] = shifted
        with pytest.raises(TransferError, match="bytes 1-10, not bytes 0-9"):
            await _fetch(reader, server.link, 0, 10, _collect(bytearray(), []))
        server.handler[0] = hang_up
        with pytest.raises(PeerUnreachable, match="is it still up"):
            await _fetch(reader, server.link, 0, 1000, _collect(bytearray(), []))
        server.handler[0] = silent
        with pytest.raises(PeerUnreachable, match="timed out"):
            await _fetch(reader, server.link, 0, 10, _collect(bytearray(), []))
    finally:
        await reader.close()


async def test_the_sinks_own_errors_reach_the_caller_as_they_are(server: Server) -> None:
    def full(view: memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    reader = RangeReader()
    try:
        with pytest.raises(OSError) as caught:
            await _fetch(reader, server.link, 0, len(DATA), full)
        assert caught.value.errno == errno.ENOSPC and not isinstance(caught.value, PeerUnreachable)
        got = bytearray()  # the connection it broke off is not reused
        await _fetch(reader, server.link, 5, 50, _collect(got, []))
        assert bytes(got) == DATA[5:50] and len(set(server.ports)) == 2
    finally:
        await reader.close()


async def test_a_connection_the_peer_closed_while_idle_is_replaced(server: Server) -> None:
    reader = RangeReader()
    try:
        await _fetch(reader, server.link, 0, 10, _collect(bytearray(), []))
        (idle,) = [a for answers in reader._idle.values() for a in answers]
        await asyncio.sleep(KEEPALIVE + 0.5)  # the server closes it meanwhile
        assert idle.closed and not reader._idle  # dropped, its buffer with it
        got = bytearray()
        await _fetch(reader, server.link, 20, 30, _collect(got, []))
        assert bytes(got) == DATA[20:30] and len(set(server.ports)) == 2
    finally:
        await reader.close()


async def test_a_refusal_of_unknown_length_closes_its_connection(server: Server) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=503, headers={"Retry-After": "1"})
        await resp.prepare(request)  # no Content-Length: chunked, of any length
        await resp.write(b"busy")
        return resp

    server.handler[0] = chunked
    client = PeerClient()
    try:
        with pytest.raises(Busy):
            await client.archive_range(server.link, DIGEST, 0, 10, _collect(bytearray(), []))
        server.handler[0] = _ranges
        got = bytearray()
        await client.archive_range(server.link, DIGEST, 0, 10, _collect(got, []))
        assert bytes(got) == DATA[:10] and len(set(server.ports)) == 2  # not read to its end
    finally:
        await client.close()
