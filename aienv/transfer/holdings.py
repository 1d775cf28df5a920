"""Every archive this node can serve, and the size budget of the archive cache.

Three kinds, all under ``<home>/archives`` or ``<home>/tmp``:

- the current archive of each shared workspace (packed here);
- archives kept after a clone (``held_archives``): the node re-serves what it
  downloaded, so a room cloning one workspace spreads the load;
- partial archives of clones still downloading: their verified pieces are
  served already.

Held and partial archives are announced (``archives`` in the announcement) so
that a clone finds every source of a digest: every change of what is held goes
through the state store (``held_archive``, ``partial``), which discovery
follows. A workspace behind a password is different: its download is private
(neither announced nor served while it runs, and not kept after), and an archive
some peer announces as protected is no longer re-served here even if it was
cloned before the password was set.

An archive kept after a clone is *backed* by the workspace installed from it
(``backing``): its large stored entries are read from the workspace's files, so a
clone costs one copy on disk; a file edited since is not offered.

The cache is pruned to the size budget (``archive_cache``, counted in bytes on
disk), least recently used first; archives of shared workspaces and archives in
use are never pruned.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aienv.archive import pieces as piecemod
from aienv.archive.pieces import Pieces
from aienv.config import NodeSettings
from aienv.discovery.codec import HeldArchive
from aienv.errors import UnsafeArchive
from aienv.state.store import StateStore
from aienv.transfer import backing as backmod
from aienv.transfer.backing import Backing
from aienv.transfer.placement import Placement

log = logging.getLogger(__name__)

PRUNE_GRACE = 600.0  # seconds an unrecorded archive (a pack in flight) is left alone


@dataclass(slots=True)
class Partial:
    """An archive being downloaded: its verified pieces can already be served."""

    pieces: Pieces
    path: Path
    have: bytearray = field(default_factory=bytearray)
    private: bool = False  # a password-protected workspace: never served to others
    placement: Placement | None = None  # pieces written straight into entries' files
    owner: str = ""  # the clone job downloading it
    workspace: str = ""  # what it was kept for (``Holdings.keep``)

    def __post_init__(self) -> None:
        if not self.have:
            self.have = bytearray(self.pieces.count)

    @property
    def digest(self) -> str:
        return self.pieces.digest

    def covers(self, start: int, end: int) -> bool:
        """True when every piece overlapping bytes ``[start, end)`` is verified."""
        if end <= start:
            return True
        size = self.pieces.piece_size
        return all(self.have[i] for i in range(start // size, (end - 1) // size + 1))

    def where(self, index: int, archive_fd: int) -> tuple[int, int]:
        """Where piece ``index`` is written: ``(fd, the file's offset in the archive)``,
        its entry's file when the placement says so, else the archive (``archive_fd``)."""
        found = self.placement.route(index) if self.placement is not None else None
        return found if found is not None else (archive_fd, 0)

    def bitfield(self) -> str:
        bits = bytearray((len(self.have) + 7) // 8)
        for i, flag in enumerate(self.have):
            if flag:
                bits[i // 8] |= 0x80 >> (i % 8)
        return base64.b64encode(bytes(bits)).decode()


def parse_bitfield(value: str, count: int) -> bytearray:
    """The inverse of ``Partial.bitfield``; raises ValueError on a malformed value."""
    bits = base64.b64decode(value, validate=True)
    if len(bits) != (count + 7) // 8:
        raise ValueError("bitfield length does not match the piece count")
    return bytearray(1 if bits[i // 8] & (0x80 >> (i % 8)) else 0 for i in range(count))


@dataclass(slots=True, frozen=True)
class Holding:
    digest: str
    size: int
    path: Path
    label: str
    partial: Partial | None = None
    backing: Backing | None = None  # its large stored entries are a workspace's files

    def covers(self, start: int, end: int) -> bool:
        if self.backing is not None and not self.backing.covers(start, end):
            return False
        return self.partial is None or self.partial.covers(start, end)

    def have(self, pieces: Pieces) -> str:
        """``all``, or the bitfield of the pieces this node can serve (a backed file
        changed since: the pieces over it are missing)."""
        if self.partial is not None:
            return self.partial.bitfield()
        if self.backing is None or self.covers(0, self.size):
            return "all"
        have = bytearray(self.covers(*pieces.span(i)) for i in range(pieces.count))
        return Partial(pieces, self.path, have).bitfield()


class Holdings:
    def __init__(
        self,
        settings: NodeSettings,
        state: StateStore,
        guarded: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.settings = settings
        self.state = state
        self.partial: dict[str, Partial] = {}
        self._in_use: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backings: dict[str, tuple[int, Backing | None]] = {}  # digest -> (mtime, list)
        self.guarded = guarded  # digests some peer announces as password-protected

    def path(self, digest: str) -> Path:
        return self.settings.archives_dir / f"{digest}.zip"

    # -- lookup ----------------------------------------------------------------

    def find(self, digest: str) -> Holding | None:
        """The archive ``digest`` if this node may serve it to peers."""
        for record in self.state.archives():
            if record.digest == digest:
                ws = self.state.workspace(record.name)
                if ws is not None and ws.shared and self.path(digest).is_file():
                    return Holding(digest, record.size, self.path(digest), record.name)
        if self.guarded(digest):
            return None  # its owner asks for a password: only the owner serves it
        for held in self.state.held_archives():
            if held.digest == digest and self.path(digest).is_file():
                path = self.path(digest)
                return Holding(digest, held.size, path, held.workspace, None, self._backing(path))
        part = self.partial.get(digest)
        if part is not None and not part.private:
            return Holding(digest, part.pieces.size, part.path, "", part)
        return None

    def _backing(self, archive: Path) -> Backing | None:
        """The archive's backing list, read again only when its file changed (a range
        request looks it up each time)."""
        try:
            stamp = backmod.sidecar(archive).stat().st_mtime_ns
        except FileNotFoundError:
            return None
        cached = self._backings.get(archive.stem)
        if cached is None or cached[0] != stamp:
            cached = (stamp, backmod.load(archive))
            self._backings[archive.stem] = cached
        return cached[1]

    def _orphaned(self, archive: Path) -> bool:
        """A backed archive whose workspace was deleted: its large entries are gone."""
        backing = self._backing(archive)
        return backing is not None and not backing.root.is_dir()

    def pieces(self, holding: Holding) -> Pieces:
        """The piece list of a holding (blocking for a complete archive without one)."""
        if holding.partial is not None:
            return holding.partial.pieces
        return piecemod.for_archive(holding.path, holding.digest)

    def announced(self) -> list[HeldArchive]:
        """Held and partial archives, newest first (shared ones are announced as workspaces)."""
        shared = {
            r.digest
            for r in self.state.archives()
            if (ws := self.state.workspace(r.name)) is not None and ws.shared
        }
        out = [
            HeldArchive(digest=d, complete=False)
            for d, part in self.partial.items()
            if d not in shared and not part.private and not self.guarded(d)
        ]
        out += [
            HeldArchive(digest=h.digest, complete=True)
            for h in reversed(self.state.held_archives())
            if h.digest not in shared
            and h.digest not in self.partial
            and not self.guarded(h.digest)
        ]
        return out

    @contextmanager
    def using(self, digest: str) -> Iterator[None]:
        """Mark ``digest`` in use (being served or read): the pruner leaves it alone."""
        self._in_use[digest] += 1
        try:
            yield
        finally:
            self._in_use[digest] -= 1
            if self._in_use[digest] <= 0:
                del self._in_use[digest]

    # -- partial downloads -------------------------------------------------------

    def add_partial(self, partial: Partial) -> None:
        self.partial[partial.digest] = partial
        self.state.changed("partial", partial.digest)

    def remove_partial(self, digest: str) -> None:
        partial = self.partial.pop(digest, None)
        if partial is not None:
            if partial.placement is not None:
                partial.placement.close()
            self.state.changed("partial", digest)

    async def drop(self, owner: str, *, resumes: bool = False) -> None:
        """Forget the download of clone job ``owner`` (it failed, was cancelled or, with
        ``resumes``, stops to resume later: the pieces written into its files are copied
        back into the partial archive first). Its archive goes too if it had been moved
        into the cache but not kept (``keep``)."""
        found = next((p for p in self.partial.values() if p.owner == owner), None)
        if found is None:
            return
        if resumes and found.placement is not None:
            try:
                await asyncio.to_thread(found.placement.give_back, found.path, found.have)
            except OSError as exc:  # fetched again after the restart
                log.warning("pieces of %s not kept for the resume: %s", found.digest[:16], exc)
        self.remove_partial(found.digest)
        if found.path == self.path(found.digest):
            self._delete(found.digest)

    def keep(self, partial: Partial, workspace: str) -> None:
        """Move a finished download into the cache and serve it from there.

        A private one is not kept: the caller deletes it with the rest of the clone. One
        whose pieces went partly into its entries' files stays a partial download, served
        through its placement, until ``back`` knows where the workspace is installed."""
        if partial.private:
            self.remove_partial(partial.digest)
            return
        final = self.path(partial.digest)
        piecemod.save(partial.pieces, final)
        backmod.sidecar(final).unlink(missing_ok=True)  # whole again (until ``back``)
        partial.path.replace(final)
        partial.path, partial.workspace = final, workspace
        if partial.placement is not None and partial.placement.placed:
            return
        self.remove_partial(partial.digest)
        self.state.hold_archive(partial.digest, partial.pieces.size, workspace)
        self.prune()

    def back_soon(self, digest: str, root: Path) -> None:
        """``back`` in the background: a clone is done without waiting for it."""
        partial = self.partial.get(digest)
        if partial is not None and partial.path == self.path(digest):
            partial.owner = ""  # installed: no longer the clone's to drop if it fails later
        task = asyncio.get_running_loop().create_task(self.back(digest, root))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def back(self, digest: str, root: Path) -> None:
        """Keep one copy on disk: the held archive's large stored entries are read from
        the workspace just installed from it, in ``root``."""
        path = self.path(digest)
        partial = self.partial.get(digest)
        if partial is not None and partial.path == path and partial.placement is not None:
            await self._back_placed(partial, root)
            return
        if not any(h.digest == digest for h in self.state.held_archives()):
            return  # not kept (a private download)
        with self.using(digest):
            try:
                backing = await asyncio.to_thread(backmod.back, path, root)
            except (OSError, ValueError, zipfile.BadZipFile, UnsafeArchive) as exc:  # kept whole
                log.warning("archive %s stays whole: %s", digest[:16], exc)
                return
        if backing is not None:
            log.info("archive %s: %d entries read from %s", digest[:16], len(backing.extents), root)

    async def _back_placed(self, partial: Partial, root: Path) -> None:
        """A download whose pieces went partly into its entries' files: its backing list
        written, then it is kept, served from there, and the archive's remaining copies of
        backed bytes are given back once no read of the download uses them."""
        placement, digest = partial.placement, partial.digest
        assert placement is not None
        with self.using(digest):
            try:
                backing = await asyncio.to_thread(backmod.back, partial.path, root, placement)
            except (OSError, ValueError, zipfile.BadZipFile, UnsafeArchive) as exc:
                log.warning("archive %s is not kept: %s", digest[:16], exc)
                backing = None
            if backing is None:  # its bytes are in the workspace only: it cannot be served
                self.remove_partial(digest)
                self._delete(digest)
                return
            self.remove_partial(digest)  # (the placement closes when its last read ends)
            self.state.hold_archive(digest, partial.pieces.size, partial.workspace)
            while not placement.idle:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(backmod.punch, partial.path, backing)
        log.info("archive %s: %d entries read from %s", digest[:16], len(backing.extents), root)
        self.prune()

    def forget(self, digest: str) -> None:
        """Stop serving and delete a kept archive (it proved unusable)."""
        if any(h.digest == digest for h in self.state.held_archives()):
            self.state.drop_held_archive(digest)
            self._delete(digest)

    # -- the size budget ---------------------------------------------------------

    def usage(self) -> dict[str, int]:
        total = 0
        count = 0
        for path in self.settings.archives_dir.glob("*.zip"):
            try:
                total += _on_disk(path.stat())
                count += 1
            except FileNotFoundError:
                continue
        return {"archives": count, "bytes": total, "budget": self.settings.archive_cache}

    def prune(self) -> None:
        """Delete stray archives, then the least recently used ones beyond the budget."""
        recorded = {r.digest: r for r in self.state.archives()}
        held = {h.digest: h for h in self.state.held_archives()}
        protected = set(self._in_use) | set(self.partial)
        protected |= {
            d
            for d, r in recorded.items()
            if (ws := self.state.workspace(r.name)) is not None and ws.shared
        }
        candidates: list[tuple[float, str, int]] = []
        total = 0
        now = time.time()
        for path in self.settings.archives_dir.glob("*.zip"):
            digest = path.stem
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if digest not in recorded and digest not in held and digest not in protected:
                if st.st_mtime < now - PRUNE_GRACE:  # a pack in flight renames before recording
                    self._delete(digest)
                continue
            if digest in held and digest not in protected and self._orphaned(path):
                self._delete(digest)  # its workspace was deleted: its large entries are gone
                self.state.drop_held_archive(digest)
                continue
            total += _on_disk(st)
            if digest not in protected:
                used = held[digest].used_at if digest in held else st.st_mtime
                candidates.append((used, digest, _on_disk(st)))
        for _, digest, size in sorted(candidates):
            if total <= self.settings.archive_cache:
                break
            log.info("archive cache over budget: removing %s", digest[:16])
            self._delete(digest)
            if digest in held:
                self.state.drop_held_archive(digest)
            total -= size

    def _delete(self, digest: str) -> None:
        path = self.path(digest)
        path.unlink(missing_ok=True)
        piecemod.sidecar(path).unlink(missing_ok=True)
        backmod.sidecar(path).unlink(missing_ok=True)
        self._backings.pop(digest, None)


def _on_disk(st: os.stat_result) -> int:
    """What a file takes on disk: a backed archive's holes take nothing."""
    return min(st.st_size, st.st_blocks * 512)
