"""``PeerClient``: every request to another node, and how its answers become errors.

One aiohttp session for the node's lifetime. Each request names what it asks
for (``what``, used in messages), is pinned to the certificate its ``Link``
names, never follows a redirect, and reads at most a set number of bytes. HTTP
answers map to the error tree in ``refusal``, connection failures and a TLS
certificate that is not the pinned one in ``_request``: a caller sees only
``AienvError``s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import aiohttp

from aienv.errors import (
    AienvError,
    Busy,
    NotOnPeer,
    PeerImpostor,
    PeerRefused,
    PeerUnreachable,
    RangeNotHeld,
    TransferError,
)
from aienv.identity import Identity
from aienv.peer.link import Link, describe, http_base, unreachable
from aienv.peer.ranges import RangeReader, Sink
from aienv.security import signing

DEFAULT_HTTP_PORT = 37778
POLL_TIMEOUT = 3.0  # a signed announcement
METADATA_TIMEOUT = 10.0  # a workspace's details, a piece list
BITFIELD_TIMEOUT = 3.0
MAX_ANNOUNCEMENT = 256 * 1024
MAX_JSON = 16 * 1024 * 1024  # a piece list of a very large archive stays well under this
FILES_LIMIT = 64 * 1024 * 1024  # a file list: ~250 bytes an entry, 200,000 entries at most
READ = 64 * 1024
RANGE_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=10)


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.2), 30.0)
    except ValueError:
        return 1.0


def refusal(status: int, headers: Mapping[str, str], link: Link, what: str) -> AienvError | None:
    """The error an answer other than 200/206 stands for, or None when it is a success
    (header names are looked up in lower case: aiohttp's are case-blind, ``RangeReader``'s
    are lowered)."""
    host = link.host
    if status in (200, 206):
        return None
    if status == 401:
        return PeerRefused(
            f"{host} refused the password (or asks for one) for {what}: give the right "
            "password (`aienv clone --password-stdin`, or in the web UI)"
        )
    if status == 403:
        return PeerRefused(f"{host} refuses this node (it is outside its allowed networks)")
    if status == 429:
        return PeerRefused(
            f"{host} locked this node out after failed logins: try again in "
            f"{headers.get('retry-after', 'a few')} s"
        )
    if status == 404:
        return NotOnPeer(f"{host} does not share or hold {what}")
    if status == 409:
        return RangeNotHeld(f"{host} does not hold that part of {what} yet")
    if status == 503:
        retry = _retry_after(headers.get("retry-after"))
        return Busy(f"{host} is busy serving other peers", retry_after=retry)
    return TransferError(f"{host} answered HTTP {status} for {what}")


def _unreachable(exc: BaseException, link: Link, what: str) -> AienvError:
    """A failed connection to a paired node: a certificate other than the pinned one is
    an impostor; anything else, unreachable."""
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return PeerImpostor(describe(exc, link.url))
    return PeerUnreachable(f"cannot reach {link.host} for {what} ({describe(exc, link.url)})")


class MemberRefused(AienvError):
    """A paired node answered a member request with an error: its code, status and words."""

    def __init__(self, message: str, code: str, status: int, details: dict[str, Any]) -> None:
        super().__init__(message, code=code)
        self.status = status if 400 <= status < 500 else 502
        self.extra = details

    def details(self) -> dict[str, Any]:
        return self.extra


class PeerClient:
    """The node's one client to its peers. ``close`` is idempotent. With the node's
    ``identity`` it also signs requests to paired nodes (``member``)."""

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity
        self._session: aiohttp.ClientSession | None = None
        self._ranges = RangeReader()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
            )
        return self._session

    async def close(self) -> None:
        await self._ranges.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @asynccontextmanager
    async def _request(
        self,
        link: Link,
        path: str,
        what: str,
        timeout: aiohttp.ClientTimeout,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``path`` of ``link``; yields a successful answer, raises the mapped error."""
        try:
            async with self._http().get(
                f"{link.url}{path}",
                params=params,
                headers={**link.headers(), **(headers or {})},
                ssl=link.ssl(),
                timeout=timeout,
                allow_redirects=False,  # a peer never leads this node elsewhere
            ) as resp:
                refused = refusal(resp.status, resp.headers, link, what)
                if refused is not None:
                    raise refused
                yield resp
        except aiohttp.ServerFingerprintMismatch as exc:
            raise PeerImpostor(describe(exc, link.url)) from exc
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            # not any OSError: a full disk while the caller writes what it reads is not
            # the peer's fault, and must reach the caller as it is
            raise unreachable(link, what, exc) from exc

    async def _read(self, link: Link, path: str, what: str, limit: int, timeout: float) -> bytes:
        """A whole answer of at most ``limit`` bytes (more is an error)."""
        body = bytearray()
        async with self._request(link, path, what, aiohttp.ClientTimeout(total=timeout)) as resp:
            async for chunk in resp.content.iter_chunked(READ):
                body += chunk
                if len(body) > limit:
                    raise TransferError(f"{link.host} sent more than {limit} bytes for {what}")
        return bytes(body)

    async def _json(
        self, link: Link, path: str, what: str, timeout: float, limit: int = MAX_JSON
    ) -> dict[str, Any]:
        body = await self._read(link, path, what, limit, timeout)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise TransferError(f"{link.host} sent {what} that is not JSON") from exc
        if not isinstance(data, dict):
            raise TransferError(f"{link.host} sent {what} that is not a JSON object")
        return data

    # -- what this node asks of its peers --------------------------------------------

    async def announcement(self, link: Link, timeout: float = POLL_TIMEOUT) -> bytes:
        """The peer's signed announcement, raw (the caller decodes and checks it)."""
        path = "/api/v1/node/announcement"
        async with self._request(
            link, path, "its announcement", aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            data = bytearray()
            async for chunk in resp.content.iter_chunked(READ):
                data += chunk
                if len(data) > MAX_ANNOUNCEMENT:
                    break  # the decoder reports it as oversized
        return bytes(data)

    async def announcement_at(
        self, address: str, timeout: float = POLL_TIMEOUT
    ) -> tuple[str, Link, bytes]:
        """(host, link, announcement) of the node at ``HOST[:PORT]``, over http or https.

        Plain http first; when something answers but not in plain HTTP (a TLS node
        hangs up on it), https, unpinned: the announcement's signature vouches for it."""
        host, url = http_base(address, DEFAULT_HTTP_PORT)
        try:
            return host, Link(url), await self.announcement(Link(url), timeout)
        except PeerUnreachable as exc:
            if isinstance(exc.__cause__, aiohttp.ClientConnectorError | TimeoutError):
                raise  # nothing listens there, or it is silent: https would not do better
            _, tls_url = http_base(address, DEFAULT_HTTP_PORT, "https")
            try:
                return host, Link(tls_url), await self.announcement(Link(tls_url), timeout)
            except PeerUnreachable:
                raise exc from None

    async def workspace(
        self, link: Link, name: str, *, limit: int = MAX_JSON, timeout: float = METADATA_TIMEOUT
    ) -> dict[str, Any]:
        """A shared workspace's details, as the peer shows them to this node."""
        path = f"/api/v1/workspaces/{name}"
        return await self._json(link, path, f"the details of workspace {name}", timeout, limit)

    async def pieces(self, link: Link, digest: str) -> dict[str, Any]:
        """An archive's piece list (sizes and hashes) and which pieces the peer has."""
        what = f"the piece list of archive {digest[:16]}…"
        return await self._json(link, f"/api/v1/archives/{digest}/pieces", what, METADATA_TIMEOUT)

    async def files(self, link: Link, digest: str) -> dict[str, Any]:
        """An archive's file list: each entry's path, hashes and span (``archive.files``)."""
        what = f"the file list of archive {digest[:16]}…"
        path = f"/api/v1/archives/{digest}/files"
        return await self._json(link, path, what, METADATA_TIMEOUT, FILES_LIMIT)

    async def have(self, link: Link, digest: str) -> str | None:
        """Which pieces of an archive the peer has: "all", a bitfield, or None if unsaid."""
        path = f"/api/v1/archives/{digest}/pieces?fields=have"
        data = await self._json(link, path, f"archive {digest[:16]}…", BITFIELD_TIMEOUT)
        have = data.get("have")
        return have if isinstance(have, str) else None

    async def archive_range(
        self, link: Link, digest: str, start: int, end: int, sink: Sink
    ) -> None:
        """Bytes ``[start, end)`` of archive ``digest``, in order, into ``sink`` (a view
        valid only during each call), read by the ``RangeReader``."""
        what = f"archive {digest[:16]}…"
        headers = {"Range": f"bytes={start}-{end - 1}", "If-Range": f'"{digest}"'}
        await self._ranges.fetch(
            link,
            f"/api/v1/archives/{digest}",
            headers,
            what,
            sink,
            partial(refusal, link=link, what=what),
            content_range=f"bytes {start}-{end - 1}",
        )

    # -- requests to paired nodes (flows.group), signed --------------------------------

    async def member(
        self,
        link: Link,
        receiver: str,
        method: str,
        path: str,
        what: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float = METADATA_TIMEOUT,
    ) -> dict[str, Any]:
        """A JSON request to the paired node ``receiver``, signed by this node; its JSON
        answer, or its refusal as ``MemberRefused`` (with the member's own words)."""
        assert self.identity is not None, "a client without the node's identity signs nothing"
        data = b"" if body is None else json.dumps(body).encode()
        headers = signing.sign(self.identity, receiver, method, path, data)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method, f"{link.url}{path}", data=data or None, headers=headers,
                ssl=link.ssl(), timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:  # fmt: skip
                raw = await resp.content.read(MAX_JSON + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise _unreachable(exc, link, what) from exc
        try:
            answer = json.loads(raw) if len(raw) <= MAX_JSON else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise TransferError(f"{link.host} answered HTTP {status} for {what}, not JSON")
        if status >= 400:
            error = answer.pop("error", None) or {}
            message = str(error.get("message") or f"HTTP {status}")
            raise MemberRefused(message, str(error.get("code") or "refused"), status, answer)
        return answer

    @asynccontextmanager
    async def member_bytes(
        self, link: Link, receiver: str, path: str, what: str, start: int = 0
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """A paired node's file from byte ``start`` on (a signed GET), as a stream."""
        assert self.identity is not None, "a client without the node's identity signs nothing"
        headers = signing.sign(self.identity, receiver, "GET", path, b"")
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            async with self._http().get(
                f"{link.url}{path}", headers=headers, ssl=link.ssl(), timeout=RANGE_TIMEOUT,
                allow_redirects=False,
            ) as resp:  # fmt: skip
                if resp.status != (206 if start else 200):
                    raise TransferError(f"{link.host} answered HTTP {resp.status} for {what}")
                yield resp.content
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise _unreachable(exc, link, what) from exc
