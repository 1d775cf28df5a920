"""A workspace's versions on this node, and the newer versions its origin offers.

A *version* is one archive of the workspace: its signed digest, the origin's
revision number (1, 2, 3… for each archive with new content) and the manifest's
``version`` string, with how it came here (``packed`` by this node, ``cloned``,
``updated``, ``rolled back``). A *pending update* is the newer version a clone's
origin announced: kept, so that a clone can still update from another holder
once the origin has left. Both go with the workspace's record (deleted with it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from aienv.state.store import StateStore

KEPT = 50  # versions listed per workspace


@dataclass(slots=True, frozen=True)
class VersionRecord:
    workspace: str
    digest: str
    revision: int
    version: str
    size: int
    unpacked_size: int
    files: int
    how: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class VersionLog:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.db = state.db

    def of(self, workspace: str) -> list[VersionRecord]:
        """Newest first."""
        rows = self.db.query(
            "SELECT * FROM versions WHERE workspace = ? ORDER BY created_at DESC", (workspace,)
        )
        return [VersionRecord(**dict(r)) for r in rows]

    def latest(self, workspace: str) -> VersionRecord | None:
        found = self.of(workspace)
        return found[0] if found else None

    def next_revision(self, workspace: str) -> int:
        rows = self.db.query(
            "SELECT MAX(revision) AS top FROM versions WHERE workspace = ?", (workspace,)
        )
        return int(rows[0]["top"] or 0) + 1

    def add(self, record: VersionRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.workspace,
                    record.digest,
                    record.revision,
                    record.version,
                    record.size,
                    record.unpacked_size,
                    record.files,
                    record.how,
                    record.created_at,
                ),
            )
            conn.execute(
                "DELETE FROM versions WHERE workspace = ? AND created_at < (SELECT created_at "
                "FROM versions WHERE workspace = ? ORDER BY created_at DESC LIMIT 1 OFFSET ?)",
                (record.workspace, record.workspace, KEPT - 1),
            )
        self.state.changed("version", record.workspace)

    # -- pending updates ----------------------------------------------------------------

    def pending(self, workspace: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT data FROM updates WHERE workspace = ?", (workspace,))
        return json.loads(rows[0]["data"]) if rows else None

    def set_pending(self, workspace: str, offer: dict[str, Any] | None) -> None:
        with self.db.transaction() as conn:
            if offer is None:
                conn.execute("DELETE FROM updates WHERE workspace = ?", (workspace,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO updates VALUES (?, ?)", (workspace, json.dumps(offer))
                )
        self.state.changed("workspace", workspace)
