"""Swapping a workspace's folder for its staged new version, and back (a rollback).

The two folders change places in one ``renameat2(RENAME_EXCHANGE)``: the
workspace's path never misses a folder. The one replaced is kept as
``<home>/versions/NAME/previous`` with what it was (``previous.json``: its origin
and file list) until the next update.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from aienv.archive.files import FileList
from aienv.archive.pieces import write_json
from aienv.errors import WorkspaceError
from aienv.flows.updates.offers import Offers, label
from aienv.state.versions import VersionRecord

RENAME_EXCHANGE = 2
AT_FDCWD = -100


class Swaps:
    def __init__(self, offers: Offers) -> None:
        self.offers = offers
        self.state = offers.state
        self.store = offers.store
        self.versions = offers.versions

    async def swap(
        self,
        name: str,
        staged: Path,
        origin: dict[str, Any],
        new_origin: dict[str, Any],
        base: FileList,
        new: FileList,
        stat: dict[str, list[int]],
    ) -> None:
        """The staged folder in place of the workspace's, in one step; the old one kept
        as ``previous`` (with what it was) for a rollback.

        A journal (``swap.json``: what the records become, and the staged folder's
        inode) is written first: a node stopped between the exchange and the records
        finishes the swap when it starts again (``recover``), or drops the staged
        folder if the exchange never happened."""
        folder = self.offers.folder(name)
        await asyncio.to_thread(os.chmod, staged, 0o700)
        journal = {
            "staged": str(staged),
            "inode": os.stat(staged).st_ino,
            "origin": origin,
            "new_origin": new_origin,
            "base": base.to_json(),
            "new": new.to_json(),
            "stat": stat,
            "old_stat": self.offers.stat(name),
        }
        await asyncio.to_thread(write_json, folder / "swap.json", journal)
        _exchange(staged, self.store.path(name))
        await asyncio.to_thread(self._finish_files, name, journal)
        self._finish_records(name, journal)

    def _finish_files(self, name: str, journal: dict[str, Any]) -> None:
        """After the exchange: the old folder (now where the staged one was) becomes
        ``previous``, the lists follow (blocking)."""
        folder = self.offers.folder(name)
        previous, staged = folder / "previous", Path(journal["staged"])
        if staged.exists():  # else moved already, by a run cut off later on
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(staged, previous)
        old = {"origin": journal["origin"], "base": journal["base"], "stat": journal["old_stat"]}
        write_json(folder / "previous.json", old)
        new_origin = journal["new_origin"]
        new = FileList.from_json(journal["new"], new_origin["digest"])
        self.offers.write_base(name, new)
        self.offers.write_stat(name, journal["stat"])
        for stale in folder.glob("incoming-*.files"):  # the .part becomes the held archive
            stale.unlink(missing_ok=True)

    def _finish_records(self, name: str, journal: dict[str, Any]) -> None:
        """The state store follows (on the event loop's thread); the journal goes last."""
        new_origin = journal["new_origin"]
        new = FileList.from_json(journal["new"], new_origin["digest"])
        self._now_at(name, new_origin, new, "updated")
        (self.offers.folder(name) / "swap.json").unlink()

    def _now_at(self, name: str, origin: dict[str, Any], listing: FileList, how: str) -> None:
        """The workspace's record says it holds ``listing``'s version, from ``origin``."""
        self.state.set_origin(name, origin)
        self.versions.set_pending(name, None)
        revision, version = int(origin.get("revision") or 0), str(origin.get("version", ""))
        record = VersionRecord(
            name, listing.digest, revision, version, listing.size, listing.unpacked,
            len(listing.files), how, time.time(),
        )  # fmt: skip
        self.versions.add(record)

    def recover(self) -> None:
        """Finish or undo each swap a stopped node left half done (at start, blocking)."""
        root = self.offers.settings.versions_dir
        for journal_file in root.glob("*/swap.json"):
            name = journal_file.parent.name
            try:
                journal = json.loads(journal_file.read_text())
                current = os.stat(self.store.path(name)).st_ino
            except (OSError, ValueError):
                journal_file.unlink(missing_ok=True)
                continue
            if current == journal["inode"]:  # exchanged: the records had not followed
                self._finish_files(name, journal)
                self._finish_records(name, journal)
                self.state.event("update", f"workspace {name}: update finished after a restart")
            else:  # never exchanged: the old version is in place, whole
                shutil.rmtree(journal["staged"], ignore_errors=True)
                journal_file.unlink()
                self.state.event("update", f"workspace {name}: an update cut off was dropped")

    def previous_origin(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.offers.folder(name) / "previous.json").read_text())
        except (OSError, ValueError):
            return None
        origin = data.get("origin") if isinstance(data, dict) else None
        return origin if isinstance(origin, dict) else None

    async def back(self, name: str, previous: dict[str, Any] | None) -> None:
        """Swap the previous folder back; the one rolled back from becomes the previous."""
        folder = self.offers.folder(name)
        data = json.loads((folder / "previous.json").read_text())
        previous = previous or data["origin"]
        record = self.store.record(name)
        base = self.offers.base(name)
        _exchange(folder / "previous", self.store.path(name))
        if base is not None:
            back = {"origin": record.origin, "base": base.to_json(), "stat": self.offers.stat(name)}
            write_json(folder / "previous.json", back)
        old_base = FileList.from_json(data["base"], previous["digest"])
        self.offers.write_base(name, old_base)
        self.offers.write_stat(name, data.get("stat") or {})
        self._now_at(name, previous, old_base, "rolled back")
        back_to = label(previous.get("version", ""), int(previous.get("revision") or 0))
        self.state.event("update", f"workspace {name} rolled back to {back_to}")
        self.offers.spawn(name)  # the newer version is an update again


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders atomically (``renameat2`` with ``RENAME_EXCHANGE``)."""
    done = _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if done != 0:
        err = ctypes.get_errno()
        raise WorkspaceError(f"cannot swap {a} and {b}: {os.strerror(err)}")
