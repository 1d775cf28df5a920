"""The discovery service: announce what this node shares, learn what peers share.

Announces on every chosen interface every ``interval`` seconds and in a short burst
as soon as the shared set changes; says goodbye on stop; expires peers after three
missed intervals; polls manual and DNS-SD-found peers over HTTP for the same signed
announcement. Bad datagrams are counted by reason, logged once each, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import psutil

from aienv.discovery import codec
from aienv.discovery import peers as peers_module
from aienv.discovery.beacon import Beacon
from aienv.discovery.dnssd import DnsSd
from aienv.discovery.interfaces import Interface
from aienv.discovery.peers import Peer, PeerTable
from aienv.errors import AienvError, PeerUnreachable
from aienv.identity import Identity
from aienv.peer import Link, PeerClient

log = logging.getLogger(__name__)

BURST_DELAYS = (0.0, 0.15, 0.5)
MAX_FETCHES = 4  # full lists fetched over HTTP at once, for every peer together
MOVE_EVERY = 10.0  # seconds between two checks of a peer's new address


def _basic_resources() -> dict[str, int]:
    return {"cpus": psutil.cpu_count() or 1, "memory": psutil.virtual_memory().total}


class DiscoveryService:
    def __init__(
        self,
        identity: Identity,
        node_name: str,
        http_port: int,
        group: str,
        port: int,
        interval: float,
        interfaces: list[Interface],
        shared: Callable[[], list[codec.SharedWorkspace]],
        manual_peers: Callable[[], list[str]],
        on_peer_change: Callable[[str, str, str], None],
        dnssd: bool = True,
        archives: Callable[[], list[codec.HeldArchive]] = list,
        resources: Callable[[], dict[str, int]] | None = None,
        allowed: Callable[[str], bool] = lambda address: True,
        tls_fingerprint: str | None = None,
        client: PeerClient | None = None,
        peers: PeerTable | None = None,
    ) -> None:
        self.identity = identity
        self.http = codec.HttpInfo(
            port=http_port,
            scheme="https" if tls_fingerprint else "http",
            fingerprint=tls_fingerprint,
        )
        self.allowed = allowed
        self.node_name = node_name
        self.interval = interval
        self.interfaces = interfaces
        self.shared = shared
        self.archives = archives
        self.resources = resources or _basic_resources
        self.manual_peers = manual_peers
        self.on_peer_change = on_peer_change
        self.instance = secrets.token_hex(8)
        self.client = client or PeerClient()
        self.peers = peers or PeerTable()
        self.counters: Counter[str] = Counter()
        self._seq = 0
        self._logged: set[str] = set()
        self._beacon = Beacon(group, port, interfaces)
        found, lost = self._dnssd_found, self._dnssd_lost
        self._dnssd = (
            DnsSd(identity.node_id, node_name, http_port, interfaces, found, lost)
            if dnssd
            else None
        )
        self._dnssd_peers: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._polls: set[asyncio.Task[bool]] = set()
        self._fetches: set[asyncio.Task[bool]] = set()  # full lists and moves being fetched
        self._move_tried: dict[str, float] = {}
        self._full_fetched: dict[str, float] = {}
        self._names: dict[str, str] = {}  # peer name → the node id first seen with it
        self._conflicts: set[tuple[str, str]] = set()
        self._stopped = False

    # -- what we say ---------------------------------------------------------

    def body(self) -> codec.Body:
        self._seq += 1
        return codec.tagged(
            codec.Body(
                name=self.node_name,
                instance=self.instance,
                seq=self._seq,
                http=self.http,
                interval=self.interval,
                resources=self.resources(),
                workspaces=self.shared(),
                archives=self.archives(),
            )
        )

    def datagram(self, max_size: int = codec.MAX_DATAGRAM) -> bytes:
        return codec.encode(self.body(), self.identity, max_size=max_size)

    def announce_now(self) -> None:
        """Ask for an immediate burst of announcements (the shared set changed)."""
        self._wake.set()

    # -- what we hear --------------------------------------------------------

    def handle_datagram(
        self, data: bytes, address: str, source: str = "multicast", *, over_http: bool = False
    ) -> None:
        """Take one announcement in: from a datagram, or (``over_http``) fetched from its
        node, which may carry the full list of what it shares."""
        self.counters["received"] += 1
        if not self.allowed(address):  # LAN-only: not even decoded
            self._drop("not_allowed", address)
            return
        http = over_http or source != "multicast"
        result = codec.decode(
            data, max_size=codec.MAX_HTTP_ANNOUNCEMENT if http else codec.MAX_DATAGRAM
        )
        if isinstance(result, codec.Invalid):
            self._drop(result.reason, address, result.detail)
            return
        if result.node_id == self.identity.node_id:
            self.counters["own"] += 1
            return
        if result.kind == codec.KIND_GOODBYE:
            self.counters["accepted"] += 1
            peer = self.peers.goodbye(result)
            if peer is not None:
                self.on_peer_change("left", peer.node_id, f"peer {peer.name} left")
            return
        refused = self.peers.refusal(result.node_id, address)
        if refused is not None:  # a flood of fresh keys, or a full table: not taken in
            self._drop(refused, address)
            return
        self.counters["accepted"] += 1
        self._check_name(result.body.name, result.node_id, address)
        change = self.peers.update(result, address, source)
        self._prove_move(result.node_id)
        if result.body.more and not http and result.body.http is not None:
            if self.peers.holds_whole_lists(result.node_id):  # those the datagram cut
                self.counters["full_list_held"] += 1
            else:
                self._fetch_full_list(result.node_id, f"{address}:{result.body.http.port}")
        if change == "joined":
            self.on_peer_change(
                "joined", result.node_id, f"peer {result.body.name} joined ({address})"
            )
        elif change == "updated":
            self.on_peer_change("updated", result.node_id, f"peer {result.body.name} updated")

    def _drop(self, reason: str, address: str, detail: str = "") -> None:
        """Count a datagram not taken in; log each reason once (at info for a refusal)."""
        self.counters[f"dropped_{reason}"] += 1
        self.counters["dropped"] += 1
        if reason in self._logged:
            return
        self._logged.add(reason)
        if reason == "not_allowed":
            log.info("ignoring announcements from %s: outside the allowed networks", address)
        elif reason in ("table_full", "new_ids"):
            log.warning(
                "not taking in announcements from %s (%s): too many new node ids, or too many "
                "peers; counted as dropped_%s", address, reason, reason,
            )  # fmt: skip
        else:
            log.debug("dropped datagram from %s: %s %s", address, reason, detail)

    def _check_name(self, name: str, node_id: str, address: str) -> None:
        """Report a name announced by another node id than the first one seen with it.

        A node id is the hash of its key, so an id cannot change hands; a name can: a
        reinstalled machine, two machines with one hostname, or one posing as another.
        Both stay listed (by id); clones by that name then ask for an id prefix.
        """
        first = self._names.setdefault(name, node_id)
        if first != node_id and (name, node_id) not in self._conflicts:
            self._conflicts.add((name, node_id))
            self.counters["name_conflicts"] += 1
            self.on_peer_change(
                "conflict",
                node_id,
                f"peer name {name} is now also announced by node {node_id[:12]} at {address} "
                f"(first seen from node {first[:12]}): a reinstalled machine, or another "
                "one using its name",
            )

    def _fetch_full_list(self, node_id: str, address: str) -> None:
        """The peer's list did not fit a datagram: fetch it over HTTP, at most once a
        second per peer and ``MAX_FETCHES`` at a time in all (datagrams, whose source
        address can be forged, must not make this node connect anywhere at will)."""
        now = time.monotonic()
        if now - self._full_fetched.get(node_id, 0.0) < 1.0:
            return
        if len(self._fetches) >= MAX_FETCHES:
            self.counters["full_list_deferred"] += 1  # the next announcement asks again
            return
        self._full_fetched[node_id] = now
        self.counters["full_list_fetches"] += 1
        while len(self._full_fetched) > peers_module.MAX_PEERS:
            self._full_fetched.pop(next(iter(self._full_fetched)))
        self._track(self.poll(address, "multicast"), fetch=True)

    def _prove_move(self, node_id: str) -> None:
        """A known peer announced from another address: move it there only once that
        address proves to be the peer (a TLS handshake pinned to the certificate its
        signed announcement names), at most once per ``MOVE_EVERY`` seconds a peer."""
        peer = self.peers.get(node_id)  # (each datagram: not a walk of the whole table)
        if peer is None or peer.proposed is None or peer.body.http is None:
            return
        now = time.monotonic()
        if now - self._move_tried.get(node_id, -MOVE_EVERY) < MOVE_EVERY:
            return
        if len(self._fetches) >= MAX_FETCHES:
            return  # asked again with the next announcement
        self._move_tried[node_id] = now
        while len(self._move_tried) > peers_module.MAX_PEERS:
            self._move_tried.pop(next(iter(self._move_tried)))
        http = peer.body.http
        link = Link.at(peer.proposed, http.port, http.scheme, http.fingerprint)
        self._track(self._check_move(peer, link), fetch=True)

    def _track(self, poll: Coroutine[Any, Any, bool], *, fetch: bool) -> None:
        """``poll`` in the background, stopped with the service (one of MAX_FETCHES: ``fetch``)."""
        task = asyncio.get_running_loop().create_task(poll)
        for tasks in (self._polls, self._fetches) if fetch else (self._polls,):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _check_move(self, peer: Peer, link: Link) -> bool:
        address = link.host
        try:
            data = await self.client.announcement(link)
            ann = codec.decode(data, max_size=codec.MAX_HTTP_ANNOUNCEMENT)
            ok = isinstance(ann, codec.Announcement) and ann.node_id == peer.node_id
        except AienvError:
            ok = False
        if ok:
            self.peers.confirm_move(peer.node_id, address)
            self.on_peer_change("moved", peer.node_id, f"peer {peer.name} moved to {address}")
            return True
        self.peers.refuse_move(peer.node_id, address)
        self.counters["moves_refused"] += 1
        self.on_peer_change(
            "impostor",
            peer.node_id,
            f"peer {peer.name}'s signed announcement came from {address}, which could not "
            f"prove it is {peer.name} (its TLS certificate): a relay or an impostor; "
            f"{peer.name} stays at {peer.address}",
        )
        return False

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await self._beacon.start(self.handle_datagram)
        if not self.interfaces:
            log.warning(
                "no interface to announce on (no up IPv4 interface but loopback, or none "
                "of --interface): peers will not see this node unless they add it by "
                "address (aienv peer add)"
            )
        if self._dnssd is not None:
            try:
                await self._dnssd.start()
            except OSError as exc:  # mDNS port taken or no multicast: the beacon still works
                log.warning("DNS-SD disabled: %s", exc)
                self._dnssd = None
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._announce_loop(), name="discovery-announce"),
            loop.create_task(self._expire_loop(), name="discovery-expire"),
            loop.create_task(self._poll_loop(), name="discovery-poll"),
        ]

    async def _announce_loop(self) -> None:
        """A burst, then one datagram per interval; a change restarts the burst at once,
        even in the middle of one (so a change never waits for the burst's tail)."""
        burst = True  # the first announcement after start is a burst too
        while True:
            self._wake.clear()
            interrupted = False
            for delay in BURST_DELAYS if burst else (0.0,):
                if delay and await self._woken_within(delay):
                    interrupted = True
                    break
                self._send(codec.KIND_ANNOUNCE)
            burst = interrupted or await self._woken_within(self.interval)

    async def _woken_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _send(self, kind: int) -> None:
        try:
            data = codec.encode(self.body(), self.identity, kind=kind)
        except ValueError as exc:
            log.warning("cannot announce: %s", exc)
            return
        if self._beacon.send(data):
            self.counters["sent"] += 1

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.interval / 4))
            for peer in self.peers.expire():
                self.on_peer_change("expired", peer.node_id, f"peer {peer.name} expired (silent)")

    async def _poll_loop(self) -> None:
        while True:
            await self.poll_due()
            await asyncio.sleep(self.interval)

    async def poll_due(self) -> None:
        """Poll the manual and DNS-SD-found peers over HTTP — but not one whose
        announcements multicast brings already: DNS-SD finds peers where multicast does
        not reach, it is not a second channel for what it delivers (each poll of N
        nodes by N nodes would cost N(N-1) requests an interval)."""
        targets = {a: "manual" for a in self.manual_peers()}
        targets.update({a: "dnssd" for a in self._dnssd_peers.values() if a not in targets})
        now = self.peers.now()
        fresh = [p for p in self.peers.all() if p.multicast_fresh(now)]
        heard = {a for p in fresh for a in (p.address, p.http_address) if a}
        skipped = [a for a in targets if a in heard]
        self.counters["polls_skipped"] += len(skipped)
        due = {a: s for a, s in targets.items() if a not in heard}
        if due:
            self.counters["polls"] += len(due)
            await asyncio.gather(*(self.poll(a, s) for a, s in due.items()))

    async def poll(self, address: str, source: str = "manual") -> bool:
        """Fetch one peer's signed announcement over HTTP; True if it was accepted."""
        try:
            host, _, data = await self.client.announcement_at(address)
        except PeerUnreachable as exc:
            log.debug("poll of %s failed: %s", address, exc.message)
            return False
        before = self.counters["accepted"]
        self.handle_datagram(data, host, source, over_http=True)
        return self.counters["accepted"] > before

    def _dnssd_found(self, name: str, address: str) -> None:
        self._dnssd_peers[name] = address
        now = self.peers.now()
        if any(p.http_address == address and p.multicast_fresh(now) for p in self.peers.all()):
            return  # multicast brings it already
        self._track(self.poll(address, "dnssd"), fetch=False)

    def _dnssd_lost(self, name: str) -> None:
        self._dnssd_peers.pop(name, None)

    async def stop(self) -> None:
        """Say goodbye, then stop every task and socket. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for task in [*self._tasks, *self._polls]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._polls, return_exceptions=True)
        self._send(codec.KIND_GOODBYE)
        await asyncio.sleep(0.05)
        self._send(codec.KIND_GOODBYE)
        if self._dnssd is not None:
            await self._dnssd.close()
        self._beacon.close()

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "interval": self.interval,
            "group": self._beacon.group,
            "port": self._beacon.port,
            "interfaces": [{"name": i.name, "address": i.address} for i in self.interfaces],
            "dnssd": self._dnssd is not None,
            "counters": dict(sorted(self.counters.items())),
        }
