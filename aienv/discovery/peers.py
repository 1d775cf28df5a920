"""The table of peers this node knows, with expiry after three missed intervals.

Pure logic: it is fed decoded announcements and asked what expired; the clock
is injected so tests need no sleeping.

Bounded, whatever a LAN sends: at most ``MAX_PEERS`` peers; at most
``NEW_PER_ADDRESS`` new node ids from one address in ``NEW_WINDOW`` seconds (a
machine runs a node, not thousands: fresh keys are free to make); and a peer
expires after three missed intervals of at most ``MAX_INTERVAL`` seconds,
whatever interval it claims.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aienv.discovery.codec import Announcement, Body, SharedWorkspace
from aienv.errors import InvalidInput, NotFound
from aienv.peer import Link

MISSED_INTERVALS = 3
MAX_PEERS = 512
NEW_PER_ADDRESS = 8
NEW_WINDOW = 60.0
MAX_INTERVAL = 300.0
TRACKED_ADDRESSES = 4096

Change = Literal["joined", "updated"]
Refusal = Literal["table_full", "new_ids"]


@dataclass(slots=True)
class Peer:
    node_id: str
    address: str
    body: Body
    first_seen: float
    last_seen: float
    sources: set[str] = field(default_factory=set)
    #: another address it was announced from, not yet proved to be the peer's (a relay
    #: of its signed announcement moves nothing on its own: ``confirm_move``)
    proposed: str | None = None
    addresses: set[str] = field(default_factory=set)  # where it was first seen, or proved itself
    multicast_at: float = 0.0  # when a datagram of it last came by multicast

    def multicast_fresh(self, now: float) -> bool:
        """Whether multicast brings its announcements now (heard within 1.5 of its
        intervals): polling it over HTTP as well would only repeat them."""
        return now - self.multicast_at <= 1.5 * min(self.body.interval, MAX_INTERVAL)

    @property
    def http_address(self) -> str | None:
        """``ADDRESS:PORT`` of its HTTP side, as DNS-SD and manual peers name it."""
        return None if self.http_port is None else f"{self.address}:{self.http_port}"

    @property
    def provable(self) -> bool:
        """Whether the peer can prove who it is at an address (TLS, pinned)."""
        return self.body.http is not None and self.body.http.fingerprint is not None

    @property
    def name(self) -> str:
        return self.body.name

    @property
    def http_port(self) -> int | None:
        return self.body.http.port if self.body.http else None

    @property
    def url(self) -> str | None:
        if self.body.http is None:
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.body.http.scheme}://{host}:{self.body.http.port}"

    def link(self, password: str | None = None) -> Link | None:
        """How to reach the peer over HTTP (pinned to the certificate its announcement
        names), or None when it serves no HTTP."""
        http = self.body.http
        if http is None:
            return None
        return Link.at(self.address, http.port, http.scheme, http.fingerprint, password)

    @property
    def expires_at(self) -> float:
        return self.last_seen + MISSED_INTERVALS * min(self.body.interval, MAX_INTERVAL)

    @property
    def workspaces(self) -> list[SharedWorkspace]:
        return list(self.body.workspaces)

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "id": self.node_id,
            "name": self.name,
            "address": self.address,
            "url": self.url,
            "instance": self.body.instance,
            "interval": self.body.interval,
            "resources": self.body.resources,
            "sources": sorted(self.sources),
            "last_seen_ago": round(max(0.0, now - self.last_seen), 3),
            "expires_in": round(max(0.0, self.expires_at - now), 3),
            "more_workspaces": self.body.more,
            "workspaces": [w.model_dump(mode="json") for w in self.body.workspaces],
            "archives": [a.model_dump(mode="json") for a in self.body.archives],
        }

    def holds(self, digest: str) -> bool | None:
        """True if the peer has all of archive ``digest``, False if part, None if none."""
        if any(w.digest == digest for w in self.body.workspaces):
            return True
        for held in self.body.archives:
            if held.digest == digest:
                return held.complete
        return None


class PeerTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._peers: dict[str, Peer] = {}
        # address → node ids it introduced lately, with when (oldest addresses dropped)
        self._introduced: OrderedDict[str, dict[str, float]] = OrderedDict()

    def now(self) -> float:
        return self._clock()

    def refusal(self, node_id: str, address: str) -> Refusal | None:
        """Why a datagram of ``node_id`` from ``address`` would not be taken in, or None."""
        if node_id in self._peers:
            return None
        if len(self._peers) >= MAX_PEERS:
            return "table_full"
        now = self._clock()
        recent = self._introduced.get(address, {})
        fresh = {n for n, t in recent.items() if now - t < NEW_WINDOW}
        if node_id not in fresh and len(fresh) >= NEW_PER_ADDRESS:
            return "new_ids"
        return None

    def _introduce(self, node_id: str, address: str, now: float) -> None:
        recent = self._introduced.pop(address, {})
        recent = {n: t for n, t in recent.items() if now - t < NEW_WINDOW}
        recent.setdefault(node_id, now)
        self._introduced[address] = recent  # most recent last
        while len(self._introduced) > TRACKED_ADDRESSES:
            self._introduced.popitem(last=False)

    def update(self, ann: Announcement, address: str, source: str) -> Change | Refusal | None:
        """Record an announcement; return what changed, why it was refused, or None for a
        stale or repeated one."""
        now = self._clock()
        body = ann.body
        peer = self._peers.get(ann.node_id)
        if peer is None:
            refused = self.refusal(ann.node_id, address)
            if refused is not None:
                return refused
            self._introduce(ann.node_id, address, now)
            peer = Peer(ann.node_id, address, body, now, now, {source})
            peer.addresses.add(address)  # where it was first seen (a pin proves the rest)
            self._peers[ann.node_id] = peer
            if source == "multicast":
                peer.multicast_at = now
            return "joined"
        if source == "multicast" and address == peer.address:
            peer.multicast_at = now
        if body.instance == peer.body.instance and body.seq < peer.body.seq:
            return None
        if body.instance == peer.body.instance and body.seq == peer.body.seq:
            # The same datagram again (another interface, another path): it
            # proves nothing new, but record that this source reaches the peer.
            peer.sources.add(source)
            return None
        if (
            body.more
            and not peer.body.more
            and body.instance == peer.body.instance
            and (body.lists is None or body.lists == peer.body.lists)
            and peer.body.workspaces[: len(body.workspaces)] == body.workspaces
            and peer.body.archives[: len(body.archives)] == body.archives
        ):
            # a datagram-sized cut of the full lists we already hold: keep the full lists
            body = body.model_copy(
                update={
                    "workspaces": peer.body.workspaces,
                    "archives": peer.body.archives,
                    "more": False,
                }
            )
        if address != peer.address and peer.provable and address not in peer.addresses:
            peer.proposed = address  # what it says is signed; where it is, not yet proved
            address = peer.address
        changed = (
            body.workspaces != peer.body.workspaces
            or body.archives != peer.body.archives
            or body.name != peer.body.name
            or body.http != peer.body.http
            or body.instance != peer.body.instance
            or address != peer.address
        )
        peer.body = body
        peer.address = address
        peer.last_seen = now
        peer.sources.add(source)
        return "updated" if changed else None

    def confirm_move(self, node_id: str, address: str) -> Peer | None:
        """The peer proved at ``address`` that it holds its certificate: it is there now."""
        peer = self._peers.get(node_id)
        if peer is None:
            return None
        peer.addresses.add(address)
        peer.address = address
        if peer.proposed == address:
            peer.proposed = None
        return peer

    def refuse_move(self, node_id: str, address: str) -> None:
        peer = self._peers.get(node_id)
        if peer is not None and peer.proposed == address:
            peer.proposed = None

    def holders(self, digest: str) -> list[Peer]:
        """Peers that announce all or part of archive ``digest``, complete ones first."""
        found = [p for p in self._peers.values() if p.url and p.holds(digest) is not None]
        return sorted(found, key=lambda p: (not p.holds(digest), p.node_id))

    def protected(self, digest: str) -> bool:
        """True when some peer shares archive ``digest`` behind a password."""
        return any(
            w.digest == digest and w.protected for p in self._peers.values() for w in p.workspaces
        )

    def goodbye(self, ann: Announcement) -> Peer | None:
        peer = self._peers.get(ann.node_id)
        if peer is None or peer.body.instance != ann.body.instance:
            return None
        return self._peers.pop(ann.node_id)

    def expire(self) -> list[Peer]:
        now = self._clock()
        gone = [p for p in self._peers.values() if p.expires_at <= now]
        for peer in gone:
            del self._peers[peer.node_id]
        return gone

    def all(self) -> list[Peer]:
        now = self._clock()
        return sorted(
            (p for p in self._peers.values() if p.expires_at > now),
            key=lambda p: (p.name, p.node_id),
        )

    def holds_whole_lists(self, node_id: str) -> bool:
        """The peer's full lists are here, tagged (a datagram that cut the same lists
        kept them: ``update``), so there is nothing to fetch."""
        peer = self.get(node_id)
        return peer is not None and not peer.body.more and peer.body.lists is not None

    def get(self, node_id: str) -> Peer | None:
        """The live peer with this node id, if any."""
        peer = self._peers.get(node_id)
        return peer if peer is not None and peer.expires_at > self._clock() else None

    def resolve(self, ref: str) -> Peer:
        """Find a live peer by node name or by a node-id prefix (at least 4 hex digits)."""
        peers = self.all()
        by_name = [p for p in peers if p.name == ref]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            ids = ", ".join(p.node_id[:12] for p in by_name)
            raise InvalidInput(f"several peers are named {ref!r} ({ids}): use a node-id prefix")
        if len(ref) >= 4:
            by_id = [p for p in peers if p.node_id.startswith(ref.lower())]
            if len(by_id) == 1:
                return by_id[0]
            if len(by_id) > 1:
                raise InvalidInput(
                    f"node-id prefix {ref!r} matches several peers: give more digits"
                )
        known = ", ".join(p.name for p in peers) or "none"
        raise NotFound(
            f"no peer {ref!r} on the network (peers seen: {known})", code="peer_not_found"
        )
