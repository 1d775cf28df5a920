"""The HTTP client the CLI uses, mapping every failure to one ``CliError``."""

from __future__ import annotations

import os
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


class Client:
    def __init__(self, url: str | None = None, timeout: float | None = 120.0) -> None:
        self.url = url or node_url()
        self._http = httpx.Client(base_url=self.url, timeout=timeout, auth=credentials())

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.TransportError as exc:
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
