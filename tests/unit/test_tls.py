"""The TLS pieces alone: the certificate made once and kept, the announcement's rule
that https names its fingerprint, and the request options that pin it."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from aienv.cli.client import Client
from aienv.discovery import codec
from aienv.errors import PeerImpostor
from aienv.peer.client import PeerClient
from aienv.peer.link import Link
from aienv.security.tls import ensure_certificate


def test_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path / "tls", "alpha")
    assert first.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    again = ensure_certificate(tmp_path / "tls", "alpha")
    assert again.fingerprint == first.fingerprint and len(first.fingerprint) == 64
    first.server_context()  # the pair loads
    first.cert.unlink()
    assert ensure_certificate(tmp_path / "tls", "alpha").fingerprint != first.fingerprint


def test_https_without_a_fingerprint_is_invalid() -> None:
    with pytest.raises(ValidationError, match="fingerprint"):
        codec.HttpInfo(port=37778, scheme="https")
    codec.HttpInfo(port=37778, scheme="https", fingerprint="ab" * 32)


def test_link_options_pin_and_send_the_password_only_when_given() -> None:
    link = Link.at("10.0.0.1", 37778, "https", "ab" * 32, password="s3cret-enough")
    assert link.url == "https://10.0.0.1:37778"
    options = link.options()
    assert isinstance(options["ssl"], aiohttp.Fingerprint)
    assert options["headers"] == {"Authorization": "Basic YWllbnY6czNjcmV0LWVub3VnaA=="}
    plain = Link.at("10.0.0.2", 37778).options()
    assert plain["ssl"] is True and plain["headers"] == {}  # no pin, no password


async def test_requests_to_a_pinned_peer_share_one_connection(tmp_path: Path) -> None:
    """Over TLS, a node's requests to one peer reuse the pinned connection: one TLS
    handshake, not one per request (and no idle connections piling up on the peer)."""
    cert = ensure_certificate(tmp_path / "tls", "alpha")
    seen: list[object] = []

    async def answer(request: web.Request) -> web.Response:
        assert request.transport is not None
        seen.append(request.transport.get_extra_info("peername"))  # the client's port
        return web.Response(body=b"signed bytes")

    app = web.Application()
    app.router.add_get("/api/v1/node/announcement", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cert.server_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = PeerClient()
    try:
        for _ in range(5):  # a new Link each time, as the node makes them
            link = Link.at("127.0.0.1", port, "https", cert.fingerprint)
            assert await client.announcement(link) == b"signed bytes"
        with pytest.raises(PeerImpostor, match="not the one its signed announcement names"):
            await client.announcement(Link.at("127.0.0.1", port, "https", "ab" * 32))
    finally:
        await client.close()
        await runner.cleanup()
    assert len(seen) == 5 and len(set(seen)) == 1


@pytest.mark.parametrize("hang_up", ["close", "reset"])
def test_cli_speaks_https_to_its_node_however_plain_http_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hang_up: str
) -> None:
    """A TLS node refuses a plain request with a close, or, when the request was still
    unread, with a reset (which CI once hit); either way the CLI retries over HTTPS,
    trusting the node's certificate alone."""
    cert = ensure_certificate(tmp_path / "tls", "alpha")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        plain, _ = listener.accept()
        if hang_up == "reset":  # close at once with the request unread: an RST
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:  # read it, then a clean close with no answer
            plain.recv(65536)
        plain.close()
        raw, _ = listener.accept()
        with cert.server_context().wrap_socket(raw, server_side=True) as tls:
            tls.recv(65536)
            body = b'{"name": "alpha"}'
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    monkeypatch.setenv("AIENV_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AIENV_CERT", str(cert.cert))
    try:
        client = Client(timeout=5)
        assert client.get("/node") == {"name": "alpha"}
        assert client.url == f"https://127.0.0.1:{port}"
    finally:
        server.join(5)
        listener.close()
