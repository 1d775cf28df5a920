"""The values of a workspace's variables on this node (docs/workspace-format.md#variables).

They live in the node's state database (0600) and go with the workspace's record,
never in the workspace's folder: no archive, export, announcement or peer's view
holds them.
"""

from __future__ import annotations

from aienv.state.db import Database

MAX_VALUE = 64 * 1024


class Variables:
    def __init__(self, db: Database) -> None:
        self.db = db

    def of(self, workspace: str) -> dict[str, str]:
        rows = self.db.query(
            "SELECT name, value FROM variables WHERE workspace = ? ORDER BY name", (workspace,)
        )
        return {row["name"]: row["value"] for row in rows}

    def set(self, workspace: str, name: str, value: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO variables(workspace, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT(workspace, name) DO UPDATE SET value = excluded.value",
                (workspace, name, value),
            )

    def unset(self, workspace: str, name: str) -> bool:
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM variables WHERE workspace = ? AND name = ?", (workspace, name)
            )
        return cursor.rowcount > 0
