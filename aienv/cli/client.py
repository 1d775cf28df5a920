"""The HTTP client the CLI uses, mapping every failure to one ``CliError``."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:37778"

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


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


def tls_context(cert: Path | None) -> ssl.SSLContext | bool:
    """Trust exactly the node's self-signed certificate (its name is not checked: the
    node is reached by address); without one, the usual verification, which refuses it."""
    if cert is None:
        return True
    try:
        context = ssl.create_default_context(cafile=str(cert))
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot read the node's certificate {cert}: {exc}") from exc
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


class Client:
    def __init__(self, url: str | None = None, timeout: float | None = 120.0) -> None:
        self.url = url or node_url()
        self.timeout = timeout
        self._http = self._connect(self.url)

    def _connect(self, url: str) -> httpx.Client:
        verify = tls_context(node_certificate()) if url.startswith("https://") else True
        return httpx.Client(base_url=url, timeout=self.timeout, auth=credentials(), verify=verify)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, f"/api/v1{path}", **kwargs)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # a node with TLS on hangs up on plain HTTP — a close, or a reset when the
            # request was still unread (a race): speak HTTPS to it, if it is ours
            if not self.url.startswith("http://"):
                raise
            if node_certificate() is None:
                raise CliError(
                    f"the node at {self.url} closed the connection without an answer: it "
                    "stopped, or it serves HTTPS (aienv serve --tls) — then set AIENV_CERT "
                    "to its tls/cert.pem (in its home) to trust it",
                    EXIT_UNREACHABLE,
                ) from exc
            self.url = "https://" + self.url.removeprefix("http://")
            self._http = self._connect(self.url)
            return self._http.request(method, f"/api/v1{path}", **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._send(method, path, **kwargs)
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise CliError(
                    f"the TLS certificate of {self.url} is not the node's certificate "
                    f"{node_certificate() or '(none found: set AIENV_CERT to its cert.pem)'}",
                    EXIT_UNREACHABLE,
                ) from exc
            raise CliError(
                f"cannot reach the aienv node at {self.url} ({exc.__class__.__name__}): "
                "is `aienv serve` running? (set AIENV_URL to use another node)",
                EXIT_UNREACHABLE,
            ) from exc
        if resp.status_code >= 400:
            try:
                error = resp.json()["error"]
                message = str(error["message"])
            except (ValueError, KeyError, TypeError):
                message = f"the node answered HTTP {resp.status_code}"
            exit_code = {404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}.get(resp.status_code, EXIT_ERROR)
            raise CliError(message, exit_code)
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json if json is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
