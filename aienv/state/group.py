"""The node group as this node keeps it: the paired nodes (their names and public
keys, from the pairing) and the environments this node placed on them.

A member is remembered by its node id, which its public key proves (the id is
derived from the key): a node that later announces the same id with another key
is an impostor, not the member. A *placement* is an environment this node asked
a member to run: where, what and when, so that ``ps --group`` can show it as
lost when that member leaves, and ``stop``/``logs`` know where to ask.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aienv.state.store import StateStore


@dataclass(slots=True, frozen=True)
class Member:
    node_id: str
    name: str
    public_key: bytes
    paired_at: float

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "name": self.name, "paired_at": self.paired_at}


@dataclass(slots=True)
class Placement:
    id: str  # the environment id on the member (WS.ENV)
    node_id: str
    node_name: str
    workspace: str
    environment: str
    created_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{self.node_id}/{self.id}"


class GroupState:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    # -- members ---------------------------------------------------------------

    def members(self) -> list[Member]:
        rows = self.state.db.query("SELECT * FROM members ORDER BY name, node_id")
        return [
            Member(r["node_id"], r["name"], bytes.fromhex(r["public_key"]), r["paired_at"])
            for r in rows
        ]

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members() if m.node_id == node_id), None)

    def add_member(self, node_id: str, name: str, public_key: bytes) -> None:
        with self.state.db.transaction() as conn:
            conn.execute(
                "INSERT INTO members VALUES (?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
                "name = excluded.name, public_key = excluded.public_key",
                (node_id, name, public_key.hex(), time.time()),
            )
        self.state.changed("member", node_id)
        self.state.event("security", f"paired with node {name} ({node_id[:12]})")

    def remove_member(self, node_id: str, why: str) -> bool:
        member = self.member(node_id)
        with self.state.db.transaction() as conn:
            conn.execute("DELETE FROM members WHERE node_id = ?", (node_id,))
            # what this node placed there is no longer its to follow
            conn.execute("DELETE FROM placed WHERE id LIKE ?", (f"{node_id}/%",))
        if member is None:
            return False
        self.state.changed("member", node_id)
        self.state.event("security", f"node {member.name} ({node_id[:12]}) unpaired: {why}")
        return True

    # -- placements ------------------------------------------------------------

    def placements(self) -> list[Placement]:
        rows = self.state.db.query("SELECT data FROM placed ORDER BY created_at")
        return [Placement(**json.loads(r["data"])) for r in rows]

    def place(self, placement: Placement) -> None:
        with self.state.db.transaction() as conn:
            conn.execute(
                "INSERT INTO placed VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "data = excluded.data, created_at = excluded.created_at",
                (placement.key, json.dumps(asdict(placement)), placement.created_at),
            )
        self.state.changed("placement", placement.key)

    def forget_placement(self, key: str) -> None:
        with self.state.db.transaction() as conn:
            conn.execute("DELETE FROM placed WHERE id = ?", (key,))
        self.state.changed("placement", key)
