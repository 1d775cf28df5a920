"""How this node speaks HTTP to a peer: its base URL, its TLS pin and a password.

A node with TLS on serves a self-signed certificate; the certificate's sha256
fingerprint travels in the node's signed announcement, and every connection to
it must present exactly that certificate (``aiohttp.Fingerprint``). A different
one fails the request as a possible impersonation: there is nothing to click
through. A password (the peer's node or workspace password) is sent only where
it was given for, never to other sources of the same archive.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import aiohttp

from aienv.discovery.codec import Body
from aienv.discovery.peers import Peer

USER = "aienv"  # the user name sent with a peer or workspace password (any is accepted)


@dataclass(frozen=True, slots=True)
class Link:
    url: str  # scheme://host:port
    fingerprint: str | None = None  # hex sha256 of the peer's certificate, when https
    password: str | None = None

    @classmethod
    def to(cls, address: str, body: Body, password: str | None = None) -> Link:
        """The link a node's announcement (``body``) describes, at ``address``."""
        if body.http is None:
            raise ValueError(f"the node at {address} does not serve HTTP")
        host = f"[{address}]" if ":" in address else address
        url = f"{body.http.scheme}://{host}:{body.http.port}"
        return cls(url, body.http.fingerprint, password)

    @classmethod
    def of(cls, peer: Peer, password: str | None = None) -> Link:
        return cls.to(peer.address, peer.body, password)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``ClientSession.request``: the pin and the credentials."""
        opts: dict[str, Any] = {}
        if self.url.startswith("https://"):
            # an announcement over https always names its fingerprint (the codec checks);
            # unpinned TLS is only used to fetch a signed announcement itself
            opts["ssl"] = (
                aiohttp.Fingerprint(bytes.fromhex(self.fingerprint or ""))
                if (self.fingerprint)
                else False
            )
        if self.password is not None:
            token = base64.b64encode(f"{USER}:{self.password}".encode()).decode()
            opts["headers"] = {"Authorization": f"Basic {token}"}
        return opts


def describe(exc: BaseException, url: str) -> str:
    """A client error in words a person can act on (a failed TLS pin above all)."""
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return (
            f"the TLS certificate of {url} is not the one its signed announcement names "
            f"(expected sha256 {exc.expected.hex()[:16]}…, got {exc.got.hex()[:16]}…): "
            "another machine may be answering in its place, so nothing was sent or taken"
        )
    return str(exc) or type(exc).__name__
