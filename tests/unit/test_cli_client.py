"""The CLI's HTTP client against raw sockets on 127.0.0.1: what it sends, how it reads
an answer (a length, chunks, a close), and what each failure says — a refused
connection (no node), a reset while connecting to a TLS node (speak HTTPS), an
answer cut short."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aienv.cli.client import EXIT_UNREACHABLE, Client, CliError
from aienv.security.tls import ensure_certificate

Reply = Callable[[socket.socket, bytes], None]


class RawServer:
    """Accepts connections one by one, reads a request's head, answers with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                head, _, body = request.partition(b"\r\n\r\n")
                length = re.search(rb"\r\nContent-Length: (\d+)", head)
                while length and len(body) < int(length[1]):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                request = head + b"\r\n\r\n" + body
                self.requests.append(request)
                self.reply(conn, request)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        self.listener.close()
        self._thread.join(5)
        assert not self._thread.is_alive()


@pytest.fixture
def serve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[Reply], RawServer]]:
    servers: list[RawServer] = []
    monkeypatch.setenv("AIENV_HOME", str(tmp_path / "home"))  # no certificate there
    monkeypatch.delenv("AIENV_CERT", raising=False)

    def start(reply: Reply) -> RawServer:
        server = RawServer(reply)
        servers.append(server)
        monkeypatch.setenv("AIENV_URL", server.url)
        return server

    yield start
    for server in servers:
        server.close()


def answer(raw: bytes) -> Reply:
    return lambda conn, _request: conn.sendall(raw)


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"


def test_request_line_path_query_and_credentials(
    serve: Callable[[Reply], RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(answer(JSON_HEAD + b"Content-Length: 2\r\n\r\n{}"))
    monkeypatch.setenv("AIENV_USER", "ada")
    monkeypatch.setenv("AIENV_PASSWORD", "s3cret")
    assert Client().get("/workspaces/a b", params={"tail": 5, "x": "y&z"}) == {}
    head = server.requests[0].decode()
    assert head.startswith("GET /api/v1/workspaces/a%20b?tail=5&x=y%26z HTTP/1.1\r\n")
    assert "Authorization: Basic YWRhOnMzY3JldA==\r\n" in head  # ada:s3cret
    Client().post("/peers", {"address": "10.0.0.1"})
    head, _, body = server.requests[1].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/v1/peers HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/json" in head
    assert b"\r\nContent-Length: 23" in head and body == b'{"address": "10.0.0.1"}'


def test_chunked_and_close_delimited_answers_are_read_whole(
    serve: Callable[[Reply], RawServer],
) -> None:
    serve(answer(JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                 b"5\r\n{\"a\":\r\n3;x=1\r\n [1\r\n2\r\n]}\r\n0\r\n\r\n"))  # fmt: skip
    assert Client().get("/x") == {"a": [1]}
    serve(answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nline 1\nline 2\n"))
    assert Client().get("/logs") == "line 1\nline 2\n"  # no length, no chunks: the close


@pytest.mark.parametrize(
    ("raw", "framing"),
    [
        (JSON_HEAD + b'Content-Length: 11\r\n\r\n{"a": [1]}\n', 0),
        (
            JSON_HEAD
            + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n6\r\n [1]}\n\r\n0\r\n\r\n',
            0,
        ),
    ],
    ids=["length", "chunked"],
)
def test_an_answer_cut_anywhere_is_never_read_as_a_shorter_one(
    serve: Callable[[Reply], RawServer], raw: bytes, framing: int
) -> None:
    """An answer cut anywhere (the node stopped mid-write) is said to be cut short or
    missing, never read as a shorter answer; the whole one reads whole."""
    cut = {"at": len(raw)}
    serve(lambda conn, _request: conn.sendall(raw[: cut["at"]]))
    assert Client().get("/x") == {"a": [1]}
    for at in range(len(raw) - framing - 1, 0, -1):
        cut["at"] = at
        with pytest.raises(CliError) as caught:
            Client().get("/x")
        assert caught.value.exit_code == EXIT_UNREACHABLE, at
        assert "the middle of its answer" in caught.value.message or (
            "without an answer" in caught.value.message
        ), (at, caught.value.message)


def test_an_error_answer_gives_its_message_and_exit_code(
    serve: Callable[[Reply], RawServer],
) -> None:
    body = b'{"error": {"code": "not_found", "message": "no workspace \'x\'"}}'
    serve(answer(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body)))  # fmt: skip
    with pytest.raises(CliError) as caught:
        Client().get("/workspaces/x")
    assert (caught.value.message, caught.value.exit_code) == ("no workspace 'x'", 4)


def test_an_answer_cut_short_is_said(serve: Callable[[Reply], RawServer]) -> None:
    serve(answer(JSON_HEAD + b'Content-Length: 100\r\n\r\n{"half": '))
    with pytest.raises(CliError) as caught:
        Client().get("/x")
    assert "stopped in the middle of its answer" in caught.value.message
    assert caught.value.exit_code == EXIT_UNREACHABLE


def test_a_refused_connection_says_no_node_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]  # closed below: nothing listens there any more
    monkeypatch.setenv("AIENV_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AIENV_HOME", str(tmp_path))
    with pytest.raises(CliError) as caught:
        Client().get("/node")
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert "cannot reach the aienv node" in caught.value.message
    assert "is `aienv serve` running?" in caught.value.message


def test_a_reset_while_connecting_to_a_tls_node_leads_to_https(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race CI hit: the TLS node's reset of a plain connection can arrive while
    that connection is still being set up, as ``connect`` failing with ECONNRESET (the
    kernel's error is injected here; a real one comes and goes with scheduling).
    Something listens, so the CLI speaks HTTPS, trusting the node's certificate."""
    cert = ensure_certificate(tmp_path / "tls", "alpha")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_tls() -> None:
        raw, _ = listener.accept()
        with cert.server_context().wrap_socket(raw, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(JSON_HEAD + b'Content-Length: 17\r\n\r\n{"name": "alpha"}')

    server = threading.Thread(target=serve_tls, daemon=True)
    server.start()
    real = socket.create_connection
    calls: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        calls.append(address)
        if len(calls) == 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setenv("AIENV_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AIENV_CERT", str(cert.cert))
    try:
        client = Client(timeout=5)
        assert client.get("/node") == {"name": "alpha"}
        assert client.url == f"https://127.0.0.1:{port}" and len(calls) == 2
    finally:
        server.join(5)
        listener.close()


def test_a_hang_up_without_the_nodes_certificate_is_said(
    serve: Callable[[Reply], RawServer],
) -> None:
    serve(lambda conn, _request: None)  # read the request, close with no answer
    with pytest.raises(CliError) as caught:
        Client().get("/node")
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert "closed the connection without an answer" in caught.value.message
    assert "AIENV_CERT" in caught.value.message
