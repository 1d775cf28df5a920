"""The node group (federation): pairing with consent, offers, placing an environment
on the node where it fits best, the group's environments in one view, and moves.

``members`` pairs and unpairs; ``hosting`` is what this node does for its
members (plan within its offer, launch, stop, logs); ``placement`` is what it
asks of them (rank, launch there, follow, list); ``move`` carries a stopped
environment's workspace and state to another node. Every request between
members is signed (``security.signing``) and checked by ``Group.member``.
See docs/federation.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from aienv.config import NodeSettings
from aienv.discovery.peers import PeerTable
from aienv.errors import AienvError
from aienv.flows.clone import CloneManager
from aienv.flows.environments import Environments
from aienv.flows.group.hosting import Hosting, Source
from aienv.flows.group.members import Members
from aienv.flows.group.move import Mover, Receiver
from aienv.flows.group.placement import Placer
from aienv.flows.workspaces import WorkspaceFlows
from aienv.identity import Identity
from aienv.peer import PeerClient
from aienv.security import signing
from aienv.state.group import GroupState, Member
from aienv.state.store import StateStore


class NotMember(AienvError):
    code = "not_paired"
    status = 403


class Group:
    def __init__(
        self,
        settings: NodeSettings,
        identity: Identity,
        state: StateStore,
        client: PeerClient,
        peers: PeerTable,
        environments: Environments,
        clones: CloneManager,
        workspaces: WorkspaceFlows,
    ) -> None:
        self.state = GroupState(state)
        self.members = Members(identity, settings.name, self.state, client, peers)
        self.hosting = Hosting(settings, identity.node_id, environments, clones, client, peers)
        self.placer = Placer(settings.name, identity.node_id, self.state, self.members,
                             self.hosting, client, peers)  # fmt: skip
        self.mover = Mover(settings, self.placer, workspaces)
        self.receiver = Receiver(settings, self.hosting, client)
        self._verifier = signing.Verifier(identity.node_id)

    def member(self, headers: Mapping[str, str], method: str, target: str, body: bytes) -> Member:
        """The paired node that signed this request; ``NotMember`` when none did."""
        node_id = headers.get(signing.NODE, "")
        member = self.state.member(node_id) if node_id else None
        if member is None:
            raise NotMember(
                "this node is not paired with the sender: pair first (aienv pair), or it was "
                "unpaired",
            )
        try:
            self._verifier.check(member.public_key, headers, method, target, body)
        except signing.BadSignature as exc:
            self.state.state.event(
                "security", f"a request claiming to be {member.name} was refused: {exc}"
            )
            raise NotMember(f"refused: {exc}", code="bad_signature") from exc
        return member


__all__ = ["Group", "NotMember", "Source"]
