"""Where clone jobs are kept: the state store, as JSON, converted here and nowhere
else; every change of a job's state goes through ``move``."""

from __future__ import annotations

import logging
import sqlite3
import time

from aienv.errors import NotFound
from aienv.flows.clone.job import NOTED, CloneJob, CloneState, advance
from aienv.state.store import StateStore

log = logging.getLogger(__name__)

TABLE = "clones"
SAVE_EVERY = 0.25  # seconds between two saves of a running download's progress


class CloneJobs:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._saved: dict[str, float] = {}

    def all(self) -> list[CloneJob]:
        return [CloneJob.from_json(doc) for doc in self.state.documents(TABLE)]

    def get(self, clone_id: str) -> CloneJob:
        doc = self.state.document(TABLE, clone_id)
        if doc is None:
            raise NotFound(f"no clone {clone_id!r}", code="clone_not_found")
        return CloneJob.from_json(doc)

    def save(self, job: CloneJob, *, quiet: bool = False) -> None:
        """Store ``job``; ``quiet`` for progress-only saves (the live feed sends those as
        ``progress`` on its own, not as changes)."""
        self.state.save_document(TABLE, job.to_json(), quiet=quiet)

    def delete(self, clone_id: str) -> None:
        self._saved.pop(clone_id, None)
        self.state.delete_document(TABLE, clone_id)

    def move(self, job: CloneJob, new: CloneState, error: str | None = None) -> None:
        """The one way a job changes state: checked against the machine, saved, and
        logged as an event when it ends or installs."""
        advance(job, new, error)
        self.save(job)
        if new in NOTED:
            detail = f": {error}" if error else ""
            self.state.event("clone", f"clone {job.id} ({job.source}) {new.value}{detail}")

    def due(self, clone_id: str, *, force: bool = False) -> bool:
        """Whether a download's progress should be saved now: at most every
        ``SAVE_EVERY`` seconds, unless forced."""
        now = time.monotonic()
        if not force and now - self._saved.get(clone_id, 0.0) <= SAVE_EVERY:
            return False
        self._saved[clone_id] = now
        return True

    def save_progress(self, job: CloneJob, *, force: bool = False) -> None:
        """Save a download's progress; a failed save (a full disk) is logged and tried
        again with the next one."""
        job.updated_at = time.time()
        try:
            self.save(job, quiet=not force)
        except sqlite3.Error as exc:
            log.warning("cannot save the progress of clone %s: %s", job.id, exc)

    def done_with(self, clone_id: str) -> None:
        self._saved.pop(clone_id, None)
