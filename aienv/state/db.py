"""SQLite access: one connection, used from the event loop thread, WAL journal.

Every write goes through ``transaction()`` so a crash leaves either the old or
the new state, never half of each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces (
    name TEXT PRIMARY KEY,
    shared INTEGER NOT NULL DEFAULT 0,
    origin TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    workspace TEXT NOT NULL REFERENCES workspaces(name) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    revision INTEGER NOT NULL,
    version TEXT NOT NULL,
    size INTEGER NOT NULL,
    unpacked_size INTEGER NOT NULL,
    files INTEGER NOT NULL,
    how TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (workspace, created_at)
);
CREATE TABLE IF NOT EXISTS updates (
    workspace TEXT PRIMARY KEY REFERENCES workspaces(name) ON DELETE CASCADE,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS variables (
    workspace TEXT NOT NULL REFERENCES workspaces(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (workspace, name)
);
CREATE TABLE IF NOT EXISTS setup_steps (
    workspace TEXT NOT NULL REFERENCES workspaces(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (workspace, name)
);
CREATE TABLE IF NOT EXISTS archives (
    name TEXT PRIMARY KEY REFERENCES workspaces(name) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    unpacked_size INTEGER NOT NULL,
    files INTEGER NOT NULL,
    pieces TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS held_archives (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    workspace TEXT NOT NULL,
    added_at REAL NOT NULL,
    used_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    node_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    paired_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS placed (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS manual_peers (address TEXT PRIMARY KEY, added_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS clones (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS environments (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS system_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS system_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS system_changes_ts ON system_changes(ts);
"""

# (table, column, definition): added to tables created before the column existed
ADDED_COLUMNS = (("archives", "pieces", "TEXT NOT NULL DEFAULT ''"),)


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch(mode=0o600)  # the node's alone: SQLite gives its -wal and -shm the same mode
        path.chmod(0o600)
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)  # idempotent; executescript commits on its own
        self._add_columns()
        self.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def _add_columns(self) -> None:
        """Columns added since a table was first created (a home made by an older node)."""
        for table, column, kind in ADDED_COLUMNS:
            names = {row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in names:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, params))

    def close(self) -> None:
        self.conn.close()
