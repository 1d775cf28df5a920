"""Pairing and unpairing: how a node enters another's group, with a person's consent
on both ends.

On node A, ``open_code`` shows a code (``aienv pair``); on node B the person
types it (``aienv pair A``) and B's ``pair`` sends A its key with a proof made
with the code (``security.pairing``); A's ``join`` checks it, remembers B, and
answers with its own proof, which B checks before it remembers A. A code pairs
one node, then it is void (a group of three is two codes). Either node
may later ``unpair`` the other: it forgets it at once and tells it (signed), so
the other forgets it too; a node that is away when it is told still refuses
every request of the node that left (it no longer holds its key).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aienv.discovery.peers import Peer, PeerTable
from aienv.errors import AienvError, Forbidden, InvalidInput, NotFound, PeerImpostor
from aienv.identity import Identity, node_id_for
from aienv.peer import PeerClient
from aienv.security import pairing
from aienv.state.group import GroupState, Member

log = logging.getLogger(__name__)

JOIN = "/api/v1/member/join"
LEAVE = "/api/v1/member/leave"


@dataclass(slots=True)
class _Code:
    code: str
    expires_at: float
    attempts: int = pairing.ATTEMPTS
    joined: list[str] = field(default_factory=list)  # node ids paired with this code


class Members:
    def __init__(
        self,
        identity: Identity,
        name: str,
        group: GroupState,
        client: PeerClient,
        peers: PeerTable,
    ) -> None:
        self.identity = identity
        self.name = name
        self.group = group
        self.client = client
        self.peers = peers
        self._code: _Code | None = None

    # -- the node that shows a code ------------------------------------------------

    def open_code(self) -> dict[str, Any]:
        """A new pairing code (any earlier one is void)."""
        self._code = _Code(pairing.new_code(), time.monotonic() + pairing.LIFETIME)
        self.group.state.event("security", "a pairing code was shown; it is valid for 5 min")
        return self.code_status()

    def code_status(self) -> dict[str, Any]:
        code = self._code
        if code is None:
            return {"open": False, "joined": []}
        left = code.expires_at - time.monotonic()
        joined = [m.to_json() for m in self.group.members() if m.node_id in code.joined]
        if left <= 0 or code.attempts <= 0:
            return {"open": False, "joined": joined}
        return {"open": True, "code": code.code, "expires_in": round(left), "joined": joined}

    def close_code(self) -> None:
        self._code = None

    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        """Another node asks to pair with the code shown here (``POST /member/join``)."""
        code = self._code
        if code is None or code.expires_at < time.monotonic() or code.attempts <= 0:
            raise Forbidden(
                f"{self.name} shows no pairing code now: run `aienv pair` there first",
                code="no_pairing_code",
            )
        try:
            node_id, name = str(body["node_id"]), str(body["name"])[:63]
            public_key = bytes.fromhex(str(body["public_key"]))
            proof = str(body["proof"])
        except (KeyError, ValueError) as exc:
            raise InvalidInput("a pairing request names node_id, name, public_key, proof") from exc
        expected = pairing.proof(code.code, "join", node_id, self.identity.node_id, public_key)
        if node_id_for(public_key) != node_id or not pairing.matches(expected, proof):
            code.attempts -= 1
            self.group.state.event(
                "security", f"a pairing attempt from {name} ({node_id[:12]}) had the wrong code "
                f"({code.attempts} attempts left)")  # fmt: skip
            raise Forbidden("wrong pairing code", code="wrong_pairing_code")
        self.group.add_member(node_id, name, public_key)
        code.joined.append(node_id)
        code.attempts = 0  # one code, one pairing
        mine = self.identity.public_key
        return {
            "node_id": self.identity.node_id,
            "name": self.name,
            "public_key": mine.hex(),
            "proof": pairing.proof(code.code, "welcome", self.identity.node_id, node_id, mine),
        }

    # -- the node where the code is typed --------------------------------------------

    async def pair(self, ref: str, code: str) -> Member:
        """Pair with peer ``ref`` using the code it shows."""
        try:
            pairing.normalize(code)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        peer = self.peers.resolve(ref)
        link = _link(peer)
        if not link.url.startswith("https://"):
            raise Forbidden(
                f"{peer.name} runs without TLS (--no-tls): the pairing's proofs would cross "
                "the LAN in clear, where a listener could find the code; pair with TLS on",
                code="pairing_needs_tls",
            )
        me = self.identity
        body = {
            "node_id": me.node_id,
            "name": self.name,
            "public_key": me.public_key.hex(),
            "proof": pairing.proof(code, "join", me.node_id, peer.node_id, me.public_key),
        }
        answer = await self.client.member(
            link, peer.node_id, "POST", JOIN, f"pairing with {peer.name}", body
        )
        try:
            key = bytes.fromhex(str(answer["public_key"]))
            welcome = str(answer["proof"])
        except (KeyError, ValueError) as exc:
            raise PeerImpostor(f"{peer.name} answered the pairing with nonsense") from exc
        expected = pairing.proof(code, "welcome", peer.node_id, me.node_id, key)
        if node_id_for(key) != peer.node_id or not pairing.matches(expected, welcome):
            raise PeerImpostor(
                f"{peer.name} took the code but could not prove it knew it, or its key is not "
                "the one its announcement is signed with: nothing was paired"
            )
        self.group.add_member(peer.node_id, peer.name, key)
        member = self.group.member(peer.node_id)
        assert member is not None
        return member

    async def unpair(self, ref: str) -> Member:
        """Forget a member (by name or node-id prefix) and tell it, if it is reachable."""
        member = self.find(ref)
        self.group.remove_member(member.node_id, "removed here")
        peer = self.peers.get(member.node_id)
        if peer is not None and peer.link() is not None:
            try:
                await self.client.member(
                    _link(peer), member.node_id, "POST", LEAVE, "unpairing", {}, timeout=5
                )
            except AienvError as exc:  # it refuses us from now on anyway
                log.info("could not tell %s of the unpairing: %s", member.name, exc)
        return member

    def left(self, member: Member) -> None:
        """A member unpaired this node (``POST /member/leave``)."""
        self.group.remove_member(member.node_id, "it unpaired this node")

    def find(self, ref: str) -> Member:
        """A member by name or node-id prefix (4 hex digits or more)."""
        members = self.group.members()
        found = [m for m in members if m.name == ref] or [
            m for m in members if len(ref) >= 4 and m.node_id.startswith(ref.lower())
        ]
        if len(found) == 1:
            return found[0]
        if found:
            raise InvalidInput(f"several paired nodes match {ref!r}: use a node-id prefix")
        known = ", ".join(m.name for m in members) or "none"
        raise NotFound(f"no paired node {ref!r} (paired: {known})", code="not_paired")

    def to_json(self) -> list[dict[str, Any]]:
        """The members, with whether each is on the LAN now."""
        out = []
        for member in self.group.members():
            peer = self.peers.get(member.node_id)
            online = peer is not None and peer.link() is not None
            out.append({**member.to_json(), "online": online,
                        "address": peer.address if peer else None})  # fmt: skip
        return out


def _link(peer: Peer) -> Any:
    link = peer.link()
    if link is None:
        raise NotFound(f"peer {peer.name} serves no HTTP", code="peer_unreachable")
    return link
