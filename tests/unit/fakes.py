"""Recording fakes for driving the flows without engines or other nodes: a runtime
that serves real HTTP on the planned port, and a peer that answers from a real,
signed, packed workspace held in memory. Named as fakes; the integration and
system tests run the real ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aienv.archive.pack import pack_workspace
from aienv.archive.pieces import for_archive
from aienv.config import NodeSettings
from aienv.discovery import codec
from aienv.errors import NotOnPeer, PeerUnreachable
from aienv.flows.environments import Environments
from aienv.flows.planning import Planner
from aienv.identity import Identity
from aienv.peer import Link, PeerClient
from aienv.runtime.base import Handle, LaunchSpec, Runtime
from aienv.runtime.records import EnvRecords
from aienv.state.db import Database
from aienv.state.store import Change, StateStore
from aienv.state.variables import Variables
from aienv.transfer.holdings import Holdings
from aienv.transfer.progress import Transfers
from aienv.workspace.store import WorkspaceStore

CHUNK = 256 * 1024  # bytes per view a fake peer hands a range's sink

MANIFEST = """apiVersion: aienv/v1
name: {name}
version: 1.0.0
environments:
  - name: web
    runtime: fake
    endpoints:
      - {{name: http, port: {port}, path: /, protocol: http}}
"""


def write_workspace(folder: Path, name: str = "hello", port: int = 18080) -> Path:
    folder.mkdir(parents=True)
    (folder / "workspace.yaml").write_text(MANIFEST.format(name=name, port=port))
    (folder / "data.bin").write_bytes(bytes(range(256)) * 2048)  # 512 KiB: a few pieces
    return folder


class FakeRuntime(Runtime):
    """Serves ``HTTP/1.0 200`` on the planned port once ``answer`` is set; ends when
    stopped or when ``end(code)`` is called. Records what it was asked."""

    kind = "fake"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answer = True
        self.running = False
        self._ended = asyncio.Event()
        self._code: int | None = None
        self._server: asyncio.Server | None = None

    async def launch(self, spec: LaunchSpec) -> Handle:
        self.calls.append("launch")
        self._ended = asyncio.Event()
        if self.answer:
            self._server = await asyncio.start_server(self._reply, "127.0.0.1", spec.ports["http"])
        handle = {"fake": spec.env_id}
        if spec.record is not None:
            spec.record(handle)
        self.running = True
        return handle

    async def _reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
        writer.close()

    def end(self, code: int | None) -> None:
        self._code = code
        self.running = False
        if self._server is not None:
            self._server.close()
        self._ended.set()

    async def wait(self, handle: Handle) -> int | None:
        await self._ended.wait()
        return self._code

    async def stop(self, handle: Handle, timeout: float) -> None:
        self.calls.append("stop")
        self.end(-15)

    async def is_running(self, handle: Handle) -> bool:
        return self.running


@dataclass
class Bench:
    """A node's parts below the flows, on a temporary home."""

    settings: NodeSettings
    state: StateStore
    store: WorkspaceStore
    holdings: Holdings
    transfers: Transfers
    runtime: FakeRuntime
    environments: Environments
    db: Database
    seen: list[tuple[str, str]] = field(default_factory=list)  # (kind, key) of each change

    def close(self) -> None:
        self.db.close()


def bench(home: Path) -> Bench:
    settings = NodeSettings(home=home, name="bench", ready_timeout=5.0)
    settings.make_dirs()
    db = Database(settings.db_path)
    state = StateStore(db)
    transfers = Transfers()
    holdings = Holdings(settings, state)
    store = WorkspaceStore(settings, state, holdings, transfers)
    runtime = FakeRuntime()
    records = EnvRecords(state)
    planner = Planner(settings, {"fake": runtime}, {}, records)
    environments = Environments(
        settings, state, records, store, planner, Variables(db), node_id="ab" * 16
    )
    made = Bench(settings, state, store, holdings, transfers, runtime, environments, db)
    state.listen(lambda change: made.seen.append((change.kind, change.key)))
    return made


def record_states(state: StateStore, kind: str, table: str, key: str) -> list[str]:
    """The states record ``key`` is saved in, in order, read back at each change the
    store publishes (consecutive saves in one state count once)."""
    seen: list[str] = []

    def on(change: Change) -> None:
        doc = state.document(table, key) if (change.kind, change.key) == (kind, key) else None
        if doc is not None and (not seen or seen[-1] != doc["state"]):
            seen.append(doc["state"])

    state.listen(on)
    return seen


def record_all(state: StateStore, kind: str, table: str) -> dict[str, list[str]]:
    """``record_states`` for every record of ``table``, by id."""
    seen: dict[str, list[str]] = {}

    def on(change: Change) -> None:
        doc = state.document(table, change.key) if change.kind == kind else None
        if doc is not None:
            states = seen.setdefault(change.key, [])
            if not states or states[-1] != doc["state"]:
                states.append(doc["state"])

    state.listen(on)
    return seen


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``predicate`` to hold, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g} s")
        await asyncio.sleep(0.02)


class FakePeer(PeerClient):
    """A peer node answering from memory: its signed announcement naming one shared
    workspace, the workspace's details and piece list, and byte ranges of its real
    archive (``corrupt`` flips a byte of what it sends; ``hold`` makes ranges wait)."""

    def __init__(self, folder: Path, out: Path, name: str = "alpha") -> None:
        super().__init__()
        self.identity = Identity.generate()
        packed = pack_workspace(folder, out, piece_size=64 * 1024)
        self.archive = packed.path.read_bytes()
        self.piece_list = for_archive(packed.path, packed.digest)
        self.listing = packed.listing
        self.unpacked = packed.unpacked_size
        self.digest, self.size = packed.digest, packed.size
        self.shared = codec.SharedWorkspace(
            name="hello", version="1.0.0", digest=packed.digest, size=packed.size,
            runtimes=["fake"], pieces=self.piece_list.root,
        )  # fmt: skip
        self.name = name
        self.corrupt = False
        self.hold = asyncio.Event()
        self.hold.set()
        self.asked: list[str] = []

    def _signed(self) -> bytes:
        body = codec.Body(
            name=self.name,
            instance="0" * 16,
            seq=int(time.time()),
            http=codec.HttpInfo(port=37778),
            workspaces=[self.shared],
        )
        return codec.encode(body, self.identity, max_size=codec.MAX_HTTP_ANNOUNCEMENT)

    async def announcement(self, link: Link, timeout: float = 3.0) -> bytes:
        self.asked.append("announcement")
        return self._signed()

    async def announcement_at(self, address: str, timeout: float = 3.0) -> tuple[str, Link, bytes]:
        self.asked.append("announcement")
        host = address.split(":", maxsplit=1)[0]
        return host, Link(f"http://{address}"), self._signed()

    async def workspace(
        self, link: Link, name: str, *, limit: int = 0, timeout: float = 0
    ) -> dict[str, Any]:
        self.asked.append(f"workspace {name}")
        if name != "hello":
            raise NotOnPeer(f"{link.host} does not share or hold workspace {name}")
        return {"name": name, "archive": {"unpacked_size": self.unpacked}}

    async def pieces(self, link: Link, digest: str) -> dict[str, Any]:
        self.asked.append("pieces")
        return self.piece_list.to_json()

    async def have(self, link: Link, digest: str) -> str | None:
        return "all"

    async def files(self, link: Link, digest: str) -> dict[str, Any]:
        self.asked.append("files")
        return self.listing.to_json()

    async def archive_range(
        self, link: Link, digest: str, start: int, end: int, sink: Callable[[memoryview], None]
    ) -> None:
        self.asked.append(f"range {start}-{end}")
        await self.hold.wait()
        if digest != self.digest:
            raise PeerUnreachable("no such archive")
        data = bytearray(self.archive[start:end])
        if self.corrupt:
            data[0] ^= 0xFF
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):  # a view at a time, as the RangeReader hands them
            sink(view[i : i + CHUNK])
            await asyncio.sleep(0)
