"""The HTTP client the CLI uses to reach its node, mapping every failure to one ``CliError``.

The CLI sends one request or a few to one node, its own, and what it costs is
mostly imports: httpx with its client takes ~100 ms, the standard library's
``http.client`` ~25 ms (``email`` and ``ssl``), h11 ~12 ms. So it speaks HTTP/1.1
through h11 (sans-IO: it frames the request and parses the answer, with its
length, its chunks or the close, and says when the answer was cut short) over a
plain socket, one connection per request; ``ssl`` is imported for an https
node only.

A node with TLS on hangs up on plain HTTP: with a clean close, or with a reset
when the request was still unread (even while the connection is being set
up). Either way something *is* listening and nothing was answered: the CLI
then speaks HTTPS to it, trusting the local node's own certificate alone. A
refused connection means no node: it says so.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import SplitResult, quote, urlencode, urlsplit

if TYPE_CHECKING:
    import ssl

    import h11

DEFAULT_URL = "http://127.0.0.1:37778"

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5

_PATH_SAFE = "/:@!$&'()*+,;=~"  # what a path may hold as it is (RFC 3986 pchar)


class CliError(Exception):
    def __init__(
        self, message: str, exit_code: int = EXIT_ERROR, code: str = "", data: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code  # the node's error code, when it answered with one
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}  # its whole answer


def node_url() -> str:
    return os.environ.get("AIENV_URL", DEFAULT_URL).rstrip("/")


def credentials() -> tuple[str, str] | None:
    """``AIENV_USER`` and ``AIENV_PASSWORD``: an admin user's login, for a node elsewhere
    (on the node's own machine none is needed)."""
    user, password = os.environ.get("AIENV_USER"), os.environ.get("AIENV_PASSWORD")
    return (user, password) if user and password is not None else None


def node_certificate() -> Path | None:
    """The node's TLS certificate, to trust alone: ``AIENV_CERT``, else the local node's."""
    if os.environ.get("AIENV_CERT"):
        return Path(os.environ["AIENV_CERT"])
    from aienv.config import default_home

    cert = Path(os.environ.get("AIENV_HOME") or default_home()) / "tls" / "cert.pem"
    return cert if os.access(cert, os.R_OK) else None


def tls_context(cert: Path | None) -> ssl.SSLContext:
    """Trust exactly the node's self-signed certificate (its name is not checked: the
    node is reached by address); without one, the usual verification, which refuses it."""
    import ssl

    if cert is None:
        return ssl.create_default_context()
    try:
        context = ssl.create_default_context(cafile=str(cert))
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot read the node's certificate {cert}: {exc}") from exc
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class _HungUp(Exception):
    """Something accepted the connection, then closed or reset it without an answer."""


class _Unreachable(Exception):
    """Nothing answered the connection: refused, no route, no such host, timed out."""


class Client:
    def __init__(self, url: str | None = None, timeout: float | None = 120.0) -> None:
        self.url = (url or node_url()).rstrip("/")
        self.timeout = timeout
        self._target(self.url)  # a bad AIENV_URL is said before anything is sent

    def _target(self, url: str) -> SplitResult:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"the node's URL must be http://HOST:PORT or https://HOST:PORT: {url!r}")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise CliError(f"the node's URL has a bad port: {url!r}") from exc
        return parts

    def _open(self, parts: SplitResult) -> socket.socket:
        """A connection to the node, TLS set up for an https one."""
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            raise _HungUp(str(exc)) from exc  # accepted, then reset: something is there
        except TimeoutError as exc:
            raise _Unreachable(f"no answer within {self.timeout:g} s") from exc
        except OSError as exc:  # refused, no route, no such host
            raise _Unreachable(exc.strerror or str(exc)) from exc
        if parts.scheme == "http":
            return sock
        try:
            return tls_context(node_certificate()).wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            sock.close()
            raise self._tls_failure(exc) from exc

    def _tls_failure(self, exc: OSError) -> Exception:
        """What a failed TLS handshake with the node means."""
        import ssl

        if isinstance(exc, ssl.SSLCertVerificationError):
            return CliError(
                f"the TLS certificate of {self.url} is not the node's certificate "
                f"{node_certificate() or '(none found: set AIENV_CERT to its cert.pem)'}",
                EXIT_UNREACHABLE,
            )
        if isinstance(exc, ConnectionError | ssl.SSLEOFError):  # a reset or a close
            return _HungUp(f"during the TLS handshake: {exc}")
        return CliError(  # TLS refused: a plain HTTP node, say
            f"TLS with the node at {self.url} failed: {getattr(exc, 'reason', None) or exc} "
            "(does it serve HTTPS? aienv serve --tls)",
            EXIT_UNREACHABLE,
        )

    def _exchange(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One request on a new connection, its answer read to the end: h11 frames both
        (a length, chunks, or the close), and says when the answer was cut short."""
        import h11

        parts = self._target(self.url)
        conn = h11.Connection(h11.CLIENT)
        fields = [("Host", parts.netloc), ("Connection", "close"), *headers.items()]
        if body or method in ("POST", "PUT"):
            fields.append(("Content-Length", str(len(body))))
        out = conn.send(h11.Request(method=method, target=parts.path.rstrip("/") + target,
                                    headers=fields))  # fmt: skip
        out += conn.send(h11.Data(data=body)) if body else b""
        out += conn.send(h11.EndOfMessage())
        with self._open(parts) as sock:
            try:
                sock.sendall(out)
                return self._answer(conn, sock)
            except TimeoutError as exc:
                raise CliError(
                    f"the node at {self.url} did not answer within {self.timeout:g} s",
                    EXIT_UNREACHABLE,
                ) from exc
            except OSError as exc:  # a reset, a broken pipe, a TLS close without notice
                if conn.their_state is h11.SEND_RESPONSE:  # not a byte of an answer yet
                    raise _HungUp(exc.strerror or str(exc) or type(exc).__name__) from exc
                raise self._cut(exc) from exc

    def _answer(self, conn: h11.Connection, sock: socket.socket) -> Answer:
        import h11

        status, found, data, first = 0, {}, bytearray(), b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:  # the close came too soon, or not HTTP
                if not status and not first.startswith(b"HTTP/"):
                    raise _HungUp("what came back was not HTTP" if first else "") from exc
                raise self._cut(exc) from exc
            if event is h11.NEED_DATA:
                chunk = sock.recv(65536)  # b"": the close
                first = first or chunk[:5]
                conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
                found = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, found, bytes(data))
            else:  # ConnectionClosed before a response (h11 says so only after one)
                raise _HungUp("the connection closed without an answer")

    def _cut(self, exc: BaseException | None) -> CliError:
        why = f" ({exc})" if exc is not None else ""
        return CliError(
            f"the node at {self.url} stopped in the middle of its answer{why}", EXIT_UNREACHABLE
        )

    def _send(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
        try:
            return self._exchange(method, target, body, headers)
        except _HungUp as exc:
            # a node with TLS on hangs up on plain HTTP: speak HTTPS to it, if it is ours
            if self.url.startswith("http://") and node_certificate() is not None:
                self.url = "https://" + self.url.removeprefix("http://")
                return self._exchange(method, target, body, headers)
            hint = (
                " — then set AIENV_CERT to its tls/cert.pem (in its home) to trust it"
                if self.url.startswith("http://")
                else ""
            )
            why = f" ({exc})" if str(exc) else ""
            raise CliError(
                f"the node at {self.url} closed the connection without an answer{why}: it "
                f"stopped, or it serves HTTPS (aienv serve --tls){hint}",
                EXIT_UNREACHABLE,
            ) from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        import json as jsonlib

        target = "/api/v1" + quote(path, safe=_PATH_SAFE)
        if params:
            target += "?" + urlencode(params)
        headers = {"Accept": "application/json"}
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        login = credentials()
        if login is not None:
            import base64

            token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            resp = self._send(method, target, body, headers)
        except _Unreachable as exc:
            raise CliError(
                f"cannot reach the aienv node at {self.url} ({exc}): is `aienv serve` "
                "running? (set AIENV_URL to use another node)",
                EXIT_UNREACHABLE,
            ) from exc
        is_json = resp.headers.get("content-type", "").startswith("application/json")
        if resp.status >= 400:
            data, code = None, ""
            try:
                data = jsonlib.loads(resp.body)
                message, code = str(data["error"]["message"]), str(data["error"]["code"])
            except (ValueError, KeyError, TypeError):
                message = f"the node answered HTTP {resp.status}"
            exit_code = {404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}.get(resp.status, EXIT_ERROR)
            raise CliError(message, exit_code, code, data)
        if is_json:
            try:
                return jsonlib.loads(resp.body)
            except ValueError as exc:  # the node sends JSON whole: this was cut short
                raise self._cut(None) from exc
        return resp.body.decode("utf-8", errors="replace")

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json if json is not None else {})

    def put(self, path: str, json: Any) -> Any:
        return self.request("PUT", path, json=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
