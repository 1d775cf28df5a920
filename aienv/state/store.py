"""The versioned state store: persisted records plus a change feed.

Every mutation runs in one SQLite transaction, then bumps ``version`` and
publishes a ``Change``: at once to listeners (``listen``: discovery re-announces
when what it announces changed, the access rules drop cached credentials) and
through a queue to subscribers (``subscribe``: the live feed). Records the other
parts own (clones, environments) are stored as JSON documents keyed by id; each
owner converts them to its typed record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aienv.state.db import Database

log = logging.getLogger(__name__)
MAX_EVENTS = 1000  # kept of the security events, and as many of all others
SECURITY = "security"
KEPT_CHANGES = 1000  # recent changes replayed to a stream that reconnects


@dataclass(slots=True, frozen=True)
class Change:
    version: int
    kind: str
    key: str


@dataclass(slots=True, frozen=True)
class WorkspaceRecord:
    name: str
    shared: bool
    origin: dict[str, Any] | None
    created_at: float


@dataclass(slots=True, frozen=True)
class ArchiveRecord:
    name: str
    fingerprint: str
    digest: str
    size: int
    unpacked_size: int
    files: int
    pieces: str = ""  # the piece list's root (signed in announcements); "": not known yet


@dataclass(slots=True, frozen=True)
class HeldRecord:
    digest: str
    size: int
    workspace: str
    added_at: float
    used_at: float


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # ``version`` counts changes since this start; ``boot`` names the start, so
        # a reader can tell "version 7 of this run" from "version 7 of the last one".
        self.boot = secrets.token_hex(8)
        self.version = 0
        self._recent: deque[Change] = deque(maxlen=KEPT_CHANGES)
        self._subscribers: set[asyncio.Queue[Change]] = set()
        self._listeners: list[Callable[[Change], None]] = []

    # -- change feed ---------------------------------------------------------

    def listen(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` with every change, at once (it must not block); returns the
        function that stops it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    @contextmanager
    def subscribe(self, maxsize: int = 1000) -> Iterator[asyncio.Queue[Change]]:
        queue: asyncio.Queue[Change] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def changes_since(self, boot: str, version: int) -> list[Change] | None:
        """The changes after ``version`` of run ``boot``, or None when they are not all
        kept (another run, or too long ago): the reader must then re-read everything."""
        if boot != self.boot or not 0 <= version <= self.version:
            return None
        if version == self.version:
            return []
        if not self._recent or self._recent[0].version > version + 1:
            return None
        return [c for c in self._recent if c.version > version]

    def changed(self, kind: str, key: str) -> None:
        self.version += 1
        change = Change(self.version, kind, key)
        self._recent.append(change)
        for callback in list(self._listeners):
            try:
                callback(change)
            except Exception:  # a listener's bug must not undo a committed change
                log.exception("a listener of the state store failed on %s", change)
        for queue in self._subscribers:
            if queue.full():  # a slow reader loses the oldest change, never blocks the node
                queue.get_nowait()
            queue.put_nowait(change)

    # -- workspaces ----------------------------------------------------------

    @staticmethod
    def _workspace(row: Any) -> WorkspaceRecord:
        origin = json.loads(row["origin"]) if row["origin"] else None
        return WorkspaceRecord(row["name"], bool(row["shared"]), origin, row["created_at"])

    def workspaces(self) -> list[WorkspaceRecord]:
        return [self._workspace(r) for r in self.db.query("SELECT * FROM workspaces ORDER BY name")]

    def workspace(self, name: str) -> WorkspaceRecord | None:
        rows = self.db.query("SELECT * FROM workspaces WHERE name = ?", (name,))
        return self._workspace(rows[0]) if rows else None

    def add_workspace(self, name: str, origin: dict[str, Any] | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO workspaces(name, shared, origin, created_at) VALUES (?, 0, ?, ?)",
                (name, json.dumps(origin) if origin else None, time.time()),
            )
        self.changed("workspace", name)

    def set_origin(self, name: str, origin: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE workspaces SET origin = ? WHERE name = ?", (json.dumps(origin), name)
            )
        self.changed("workspace", name)

    def remove_workspace(self, name: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM workspaces WHERE name = ?", (name,))
        self.changed("workspace", name)

    def setup_runs(self, name: str) -> dict[str, dict[str, Any]]:
        """The last run of each setup step of workspace ``name``, by step name."""
        rows = self.db.query("SELECT * FROM setup_steps WHERE workspace = ?", (name,))
        return {r["name"]: {k: r[k] for k in ("digest", "ok", "detail", "at")} for r in rows}

    def record_setup(self, name: str, step: str, digest: str, ok: bool, detail: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO setup_steps VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(workspace, name) "
                "DO UPDATE SET digest = excluded.digest, ok = excluded.ok, "
                "detail = excluded.detail, at = excluded.at",
                (name, step, digest, int(ok), detail, time.time()),
            )
        self.changed("workspace", name)

    def set_shared(self, name: str, shared: bool) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE workspaces SET shared = ? WHERE name = ?", (int(shared), name))
        self.changed("share", name)

    def archive(self, name: str) -> ArchiveRecord | None:
        rows = self.db.query("SELECT * FROM archives WHERE name = ?", (name,))
        return ArchiveRecord(**dict(rows[0])) if rows else None

    def archives(self) -> list[ArchiveRecord]:
        return [ArchiveRecord(**dict(r)) for r in self.db.query("SELECT * FROM archives")]

    def set_archive(self, record: ArchiveRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO archives VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.fingerprint,
                    record.digest,
                    record.size,
                    record.unpacked_size,
                    record.files,
                    record.pieces,
                ),
            )
        self.changed("archive", record.name)

    # -- archives kept from clones (this node serves them to others) ----------

    def held_archives(self) -> list[HeldRecord]:
        rows = self.db.query("SELECT * FROM held_archives ORDER BY used_at")
        return [HeldRecord(**dict(r)) for r in rows]

    def hold_archive(self, digest: str, size: int, workspace: str) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO held_archives VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(digest) DO UPDATE SET used_at = excluded.used_at",
                (digest, size, workspace, now, now),
            )
        self.changed("held_archive", digest)

    def touch_held_archive(self, digest: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE held_archives SET used_at = ? WHERE digest = ?", (time.time(), digest)
            )

    def drop_held_archive(self, digest: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM held_archives WHERE digest = ?", (digest,))
        self.changed("held_archive", digest)

    # -- manual peers --------------------------------------------------------

    def manual_peers(self) -> list[str]:
        return [r["address"] for r in self.db.query("SELECT address FROM manual_peers ORDER BY 1")]

    def add_manual_peer(self, address: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO manual_peers VALUES (?, ?)", (address, time.time()))
        self.changed("manual_peer", address)

    def remove_manual_peer(self, address: str) -> bool:
        with self.db.transaction() as conn:
            removed = conn.execute(
                "DELETE FROM manual_peers WHERE address = ?", (address,)
            ).rowcount
        self.changed("manual_peer", address)
        return bool(removed)

    # -- credentials (hashed; kinds: admin users, the node's peer password) ----

    def credentials(self, kind: str) -> dict[str, str]:
        rows = self.db.query("SELECT name, hash FROM credentials WHERE kind = ?", (kind,))
        return {r["name"]: r["hash"] for r in rows}

    def set_credential(self, kind: str, name: str, hashed: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO credentials VALUES (?, ?, ?, ?) ON CONFLICT(kind, name) "
                "DO UPDATE SET hash = excluded.hash",
                (kind, name, hashed, time.time()),
            )
        self.changed("credential", kind)

    def remove_credential(self, kind: str, name: str) -> bool:
        with self.db.transaction() as conn:
            removed = conn.execute(
                "DELETE FROM credentials WHERE kind = ? AND name = ?", (kind, name)
            ).rowcount
        self.changed("credential", kind)
        return bool(removed)

    # -- documents (clones, environments) -------------------------------------

    def documents(self, table: str) -> list[dict[str, Any]]:
        assert table in ("clones", "environments")
        rows = self.db.query(f"SELECT data FROM {table} ORDER BY created_at")
        return [json.loads(r["data"]) for r in rows]

    def document(self, table: str, doc_id: str) -> dict[str, Any] | None:
        assert table in ("clones", "environments")
        rows = self.db.query(f"SELECT data FROM {table} WHERE id = ?", (doc_id,))
        return json.loads(rows[0]["data"]) if rows else None

    def save_document(self, table: str, doc: dict[str, Any], *, quiet: bool = False) -> None:
        """Store ``doc``; ``quiet`` for progress-only saves, which the live feed sends as
        ``progress`` on its own rather than as changes (they would flood it)."""
        assert table in ("clones", "environments")
        data = json.dumps(doc)
        with self.db.transaction() as conn:
            if table == "clones":
                conn.execute(
                    "INSERT INTO clones(id, data, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
                    (doc["id"], data, doc["created_at"]),
                )
            else:
                conn.execute(
                    "INSERT INTO environments(id, workspace, data, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
                    (doc["id"], doc["workspace"], data, doc["created_at"]),
                )
        if not quiet:
            self.changed(table[:-1], doc["id"])

    def delete_document(self, table: str, doc_id: str) -> None:
        assert table in ("clones", "environments")
        with self.db.transaction() as conn:
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (doc_id,))
        self.changed(table[:-1], doc_id)

    # -- events --------------------------------------------------------------

    def event(self, kind: str, message: str) -> None:
        """Log an event; the log keeps the last ``MAX_EVENTS`` security events and the
        last ``MAX_EVENTS`` others apart, so a flood of peers or processes cannot push
        a lockout or a refused impostor out of it."""
        same = "=" if kind == SECURITY else "!="
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO events(ts, kind, message) VALUES (?, ?, ?)",
                (time.time(), kind, message),
            )
            conn.execute(
                f"DELETE FROM events WHERE kind {same} ? AND id < (SELECT id FROM events "
                f"WHERE kind {same} ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (SECURITY, SECURITY, MAX_EVENTS - 1),
            )
        self.changed("event", kind)

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in reversed(rows)]

    def events_after(self, after: int, limit: int = 100) -> list[dict[str, Any]]:
        """Events with an id above ``after``, oldest first (what a follower has not seen)."""
        rows = self.db.query(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        return [dict(r) for r in rows]

    # -- system samples (aienv.system.sampler) --------------------------------------

    def add_system_sample(self, sample: dict[str, Any], changes: list[dict[str, Any]]) -> None:
        """Keep one compact sample and its changes; the oldest beyond the bounds go."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO system_samples(ts, data) VALUES (?, ?)",
                (sample["ts"], json.dumps(sample)),
            )
            conn.execute(
                "DELETE FROM system_samples WHERE id <= (SELECT MAX(id) FROM system_samples) - ?",
                (MAX_SYSTEM_SAMPLES,),
            )
            for change in changes:
                conn.execute(
                    "INSERT INTO system_changes(ts, kind, action, data) VALUES (?, ?, ?, ?)",
                    (change["ts"], change["kind"], change["action"], json.dumps(change)),
                )
            if changes:
                conn.execute(
                    "DELETE FROM system_changes "
                    "WHERE id <= (SELECT MAX(id) FROM system_changes) - ?",
                    (MAX_SYSTEM_CHANGES,),
                )
        if changes:
            self.changed("system", "changes")

    def system_samples(self, since: float = 0.0, limit: int = 100) -> list[dict[str, Any]]:
        """Stored samples newer than ``since`` (unix time), oldest first, at most ``limit``."""
        rows = self.db.query(
            "SELECT data FROM system_samples WHERE ts > ? ORDER BY id DESC LIMIT ?",
            (since, limit),
        )
        return [json.loads(r["data"]) for r in reversed(rows)]

    def system_changes(self, since: float = 0.0, limit: int = 1000) -> list[dict[str, Any]]:
        """Recorded changes newer than ``since`` (unix time), oldest first, at most ``limit``."""
        rows = self.db.query(
            "SELECT id, data FROM system_changes WHERE ts > ? ORDER BY id DESC LIMIT ?",
            (since, limit),
        )
        return [{"id": r["id"], **json.loads(r["data"])} for r in reversed(rows)]


MAX_SYSTEM_SAMPLES = 360  # one hour of samples at the default 10 s
MAX_SYSTEM_CHANGES = 2000
