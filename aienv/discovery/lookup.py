"""A peer as it is now: its signed announcement fetched over HTTP and checked
against what this node already knows of it (a clone starts from this, never from
a datagram alone)."""

from __future__ import annotations

import time

from aienv.discovery import codec
from aienv.discovery.peers import Peer, PeerTable
from aienv.errors import PeerUnreachable
from aienv.peer import Link, PeerClient

TIMEOUT = 10.0


def looks_like_address(ref: str) -> bool:
    """A ``HOST[:PORT]`` rather than a node name or a node-id prefix."""
    return "." in ref or ":" in ref or ref == "localhost"


async def current_peer(
    client: PeerClient, peers: PeerTable, ref: str, password: str | None = None
) -> tuple[Peer, Link]:
    """The peer ``ref`` (a name, a node-id prefix or ``HOST[:PORT]``) with its full,
    freshly signed announcement, and the link to it carrying ``password``.

    A known peer must answer with its own node id and an announcement no older than
    the one it multicast; otherwise it is reported, not trusted."""
    expected_id, expected = None, None
    if looks_like_address(ref):
        host, _, data = await client.announcement_at(ref, TIMEOUT)
    else:
        known = peers.resolve(ref)
        link = known.link()
        if link is None:
            raise PeerUnreachable(f"peer {ref} does not serve HTTP")
        host, expected_id, expected = known.address, known.node_id, known.body
        data = await client.announcement(link, TIMEOUT)
    ann = codec.decode(data, max_size=codec.MAX_HTTP_ANNOUNCEMENT)
    if isinstance(ann, codec.Invalid):
        raise PeerUnreachable(f"peer {ref} sent an invalid announcement ({ann.reason})")
    if expected_id is not None and ann.node_id != expected_id:
        raise PeerUnreachable(
            f"the node at {host} is {ann.node_id[:12]}, not the peer {ref} ({expected_id[:12]})"
        )
    if expected is not None and (
        ann.body.instance != expected.instance or ann.body.seq < expected.seq
    ):
        raise PeerUnreachable(
            f"the node at {host} answered with an older announcement than the one "
            f"{ref} multicast (a replay, or the peer restarted): try again in a moment"
        )
    now = time.monotonic()
    peer = Peer(ann.node_id, host, ann.body, now, now, {"http"})
    found = peer.link(password)
    if found is None:
        raise PeerUnreachable(f"peer {ref} does not serve HTTP")
    return peer, found
