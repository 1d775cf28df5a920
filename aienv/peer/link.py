"""How this node addresses a peer: its base URL, its TLS pin and a password.

A node with TLS on serves a self-signed certificate; the certificate's sha256
fingerprint travels in the node's signed announcement, and every connection to
it must present exactly that certificate (``aiohttp.Fingerprint``). A different
one fails the request as a possible impersonation: there is nothing to click
through. A password (the peer's node or workspace password) is sent only where
it was given for, never to other sources of the same archive.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from typing import Any

import aiohttp

from aienv.errors import PeerUnreachable

USER = "aienv"  # the user name sent with a peer or workspace password (any is accepted)


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6]:PORT`` too) as (host, port); ValueError on a bad port."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        return address.strip("[]"), default_port
    return host.strip("[]"), int(port)


def http_base(address: str, default_port: int, scheme: str = "http") -> tuple[str, str]:
    """(host, base URL) for a ``HOST[:PORT]`` address."""
    host, port = split_host_port(address, default_port)
    url_host = f"[{host}]" if ":" in host else host
    return host, f"{scheme}://{url_host}:{port}"


@dataclass(frozen=True, slots=True)
class Link:
    url: str  # scheme://host:port
    fingerprint: str | None = None  # hex sha256 of the peer's certificate, when https
    password: str | None = None

    @classmethod
    def at(
        cls,
        address: str,
        port: int,
        scheme: str = "http",
        fingerprint: str | None = None,
        password: str | None = None,
    ) -> Link:
        """The link to ``address`` (an IP or a name) on ``port``."""
        host = f"[{address}]" if ":" in address else address
        return cls(f"{scheme}://{host}:{port}", fingerprint, password)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")

    def with_password(self, password: str | None) -> Link:
        return Link(self.url, self.fingerprint, password)

    def ssl(self) -> aiohttp.Fingerprint | bool:
        """The TLS check for this link: the pinned certificate, or none over plain HTTP.

        An https link without a fingerprint is only used to fetch a signed
        announcement (the signature vouches for it, and it names the fingerprint
        every later request pins)."""
        if self.url.startswith("https://") and self.fingerprint:
            return _pin(self.fingerprint)
        return not self.url.startswith("https://")

    def headers(self) -> dict[str, str]:
        if self.password is None:
            return {}
        token = base64.b64encode(f"{USER}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def options(self) -> dict[str, Any]:
        """Keyword arguments for one request: the pin and the credentials."""
        return {"ssl": self.ssl(), "headers": self.headers()}


@functools.lru_cache(maxsize=1024)
def _pin(fingerprint: str) -> aiohttp.Fingerprint:
    """One ``aiohttp.Fingerprint`` per certificate. aiohttp keeps open connections by
    their ``ssl`` argument, and a Fingerprint equals only itself: a new one for every
    request opened a new connection (and a TLS handshake) for every request, and left
    the last ones open on both sides (a seeder held 380 of them for ten clones)."""
    return aiohttp.Fingerprint(bytes.fromhex(fingerprint))


def pin_mismatch(url: str, expected: bytes, got: bytes) -> str:
    """What a certificate other than the pinned one means, in words."""
    return (
        f"the TLS certificate of {url} is not the one its signed announcement names "
        f"(expected sha256 {expected.hex()[:16]}…, got {got.hex()[:16]}…): "
        "another machine may be answering in its place, so nothing was sent or taken"
    )


def describe(exc: BaseException, url: str) -> str:
    """A client error in words a person can act on (a failed TLS pin above all)."""
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return pin_mismatch(url, exc.expected, exc.got)
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return str(exc) or type(exc).__name__


def unreachable(link: Link, what: str, exc: BaseException) -> PeerUnreachable:
    """A request for ``what`` that could not reach ``link``'s peer (``exc``: why)."""
    return PeerUnreachable(
        f"cannot reach peer at {link.url} for {what} ({describe(exc, link.url)}): is it still up?"
    )
