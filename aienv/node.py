"""The node: every part made in order, wired, and run in one asyncio loop.

Start: folders and identity, state (SQLite), the parts bottom up, then the HTTP
app, whose start brings up the runtimes (probe, recovery, autostart), the clone
jobs (recovery) and discovery. What follows a change in the state store (a
burst of announcements, the access rules' caches, the live feed) listens to it.
Stop (SIGINT/SIGTERM): HTTP sites first, then sampling, the goodbye
announcement and discovery, the clone jobs, the runtimes, and last the peer
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from aienv.api.app import create_app
from aienv.api.keys import About, Parts
from aienv.api.listen import DualListener
from aienv.config import NodeSettings
from aienv.discovery.interfaces import Interface, select_interfaces
from aienv.discovery.peers import PeerTable
from aienv.discovery.service import DiscoveryService
from aienv.errors import AienvError
from aienv.flows.clone import CloneManager
from aienv.flows.clone.fetch import Fetcher
from aienv.flows.clone.jobs import CloneJobs
from aienv.flows.clone.steps import CloneSteps
from aienv.flows.disk import DiskGuard
from aienv.flows.environments import Environments
from aienv.flows.group import Group
from aienv.flows.planning import Planner
from aienv.flows.setup import Setup
from aienv.flows.snapshots import Snapshots
from aienv.flows.updates import Updates
from aienv.flows.workspaces import WorkspaceFlows
from aienv.identity import Identity
from aienv.peer import PeerClient
from aienv.runtime.health import PROBE_INTERVAL, Health
from aienv.runtime.process import ProcessRuntime
from aienv.runtime.records import EnvRecords
from aienv.runtime.registry import load_runtimes
from aienv.security import WORKSPACE_PASSWORD
from aienv.security.allow import AllowList
from aienv.security.tls import Certificate, ensure_certificate
from aienv.state.db import Database
from aienv.state.store import Change, StateStore
from aienv.state.variables import Variables
from aienv.system.sampler import Sampler
from aienv.transfer.holdings import Holdings
from aienv.transfer.progress import Transfers
from aienv.transfer.serve import UploadSlots
from aienv.workspace.store import WorkspaceStore

log = logging.getLogger(__name__)

#: the changes after which peers must hear a new announcement at once
ANNOUNCED = frozenset({"share", "archive", "workspace", "held_archive", "partial", "runtimes"})


def _lock_home(home: Path) -> int:
    """Hold an exclusive lock on the home folder for the node's lifetime."""
    fd = os.open(home / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise AienvError(
            f"another aienv node is already running with the home folder {home}"
        ) from exc
    return fd


def _empty(folder: Path) -> None:
    """Staging left by a crash: never a workspace."""
    for stale in folder.iterdir():
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@dataclass(slots=True)
class _Base:
    """The parts every flow stands on."""

    settings: NodeSettings
    identity: Identity
    state: StateStore
    client: PeerClient
    peers: PeerTable
    transfers: Transfers
    holdings: Holdings
    store: WorkspaceStore


def _environments(base: _Base, health: Health, lan: str | None) -> Environments:
    records = EnvRecords(base.state)
    planner = Planner(base.settings, health.runtimes, health.broken, records)
    return Environments(
        base.settings,
        base.state,
        records,
        base.store,
        planner,
        Variables(base.state.db),
        lan_address=lan,
        node_id=base.identity.node_id,
    )


def _discovery(
    base: _Base,
    workspaces: WorkspaceFlows,
    health: Health,
    interfaces: list[Interface],
    cert: Certificate | None,
    on_peer_change: Callable[[str, str, str], None],
    allowed: Callable[[str | None], bool],
) -> DiscoveryService:
    settings = base.settings
    return DiscoveryService(
        identity=base.identity,
        node_name=settings.name,
        http_port=settings.http_port,
        group=settings.multicast_group,
        port=settings.discovery_port,
        interval=settings.announce_interval,
        interfaces=interfaces,
        client=base.client,
        peers=base.peers,
        shared=workspaces.announced,
        manual_peers=base.state.manual_peers,
        on_peer_change=on_peer_change,
        dnssd=settings.dnssd,
        archives=base.holdings.announced,
        resources=health.summary,
        allowed=allowed,
        tls_fingerprint=cert.fingerprint if cert else None,
    )


def _updates(base: _Base, environments: Environments) -> Updates:
    return Updates(
        base.settings, base.state, base.store, environments, base.client, base.peers,
        base.holdings, base.transfers, base.identity.node_id,
    )  # fmt: skip


def _group(
    base: _Base, environments: Environments, clones: CloneManager, workspaces: WorkspaceFlows
) -> Group:
    return Group(
        base.settings, base.identity, base.state, base.client, base.peers, environments,
        clones, workspaces,
    )  # fmt: skip


def _setup(base: _Base, environments: Environments) -> Setup:
    process = environments.runtimes.get("process")
    if not isinstance(process, ProcessRuntime):
        raise RuntimeError("the process runtime did not load: reinstall aienv")
    setup = Setup(base.settings, base.state, base.store, process, environments.variables)
    environments.before_launch = setup.ensure  # a launch runs what is not set up yet
    return setup


def _clones(base: _Base, environments: Environments, updates: Updates) -> CloneManager:
    settings, state = base.settings, base.state
    jobs = CloneJobs(state)
    fetcher = Fetcher(
        settings, jobs, base.client, base.peers, base.holdings, base.transfers,
        base.identity.node_id,
    )  # fmt: skip
    steps = CloneSteps(
        settings, jobs, base.client, base.peers, base.store, environments, base.holdings,
        fetcher, updates,
    )  # fmt: skip
    return CloneManager(
        state, jobs, steps, base.peers, base.store, base.holdings,
        settings.partial_dir, settings.tmp_dir,
    )  # fmt: skip


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        settings.make_dirs()
        self._lock = _lock_home(settings.home)
        _empty(settings.tmp_dir)
        identity = Identity.load_or_create(settings.key_path)
        cert = ensure_certificate(settings.tls_dir, settings.name) if settings.tls else None
        self.db = Database(settings.db_path)
        self.state = state = StateStore(self.db)
        peers, transfers = PeerTable(), Transfers()
        holdings = Holdings(settings, state, guarded=peers.protected)
        store = WorkspaceStore(settings, state, holdings, transfers)
        base = _Base(
            settings, identity, state, PeerClient(identity), peers, transfers, holdings, store
        )
        self.client = base.client
        self.health = Health(*load_runtimes(settings), settings.home)
        interfaces = select_interfaces(settings.interfaces)
        lan = next((i.address for i in interfaces if i.address[:4] != "127."), None)
        self.environments = _environments(base, self.health, lan)
        self.workspaces = WorkspaceFlows(state, store, self.environments)
        allow = AllowList(settings.allow)  # one list, and its answers, for datagrams and requests
        self.discovery = _discovery(
            base, self.workspaces, self.health, interfaces, cert, self._peer_changed, allow.allows
        )
        self.updates = _updates(base, self.environments)
        self.setup = _setup(base, self.environments)
        self.clones = _clones(base, self.environments, self.updates)
        self.sampler = Sampler(
            state,
            settings.docker_host,
            settings.sample_interval,
            containers_usable=lambda: self.health.usable("container"),
        )
        self.parts = Parts(
            about=About(settings, identity, cert, time.monotonic()),
            state=state,
            allow=allow,
            discovery=self.discovery,
            client=base.client,
            health=self.health,
            uploads=UploadSlots(settings.max_uploads, transfers),
            transfers=transfers,
            holdings=holdings,
            store=store,
            workspaces=self.workspaces,
            environments=self.environments,
            snapshots=Snapshots(self.environments),
            clones=self.clones,
            updates=self.updates,
            sampler=self.sampler,
            group=_group(base, self.environments, self.clones, self.workspaces),
            setup=self.setup,
        )
        state.listen(self._announce_on_change)

    # -- what follows the state --------------------------------------------------------

    def _announce_on_change(self, change: Change) -> None:
        """Peers hear at once of what changes in an announcement (a share, a new archive,
        an archive held or being fetched, a workspace password, the runtimes)."""
        if change.kind in ANNOUNCED or (
            change.kind == "credential" and change.key == WORKSPACE_PASSWORD
        ):
            self.discovery.announce_now()

    def _peer_changed(self, change: str, node_id: str, message: str) -> None:
        self.state.changed("peer", node_id)
        if change in ("joined", "updated"):
            self.updates.peer_changed(node_id)
        if change != "updated":
            security = change in ("conflict", "impostor")
            self.state.event("security" if security else "peer", message)

    async def _probe_loop(self) -> None:
        """Keep runtime health and free resources fresh for announcements and the API."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            changed = await self.health.probe()
            self.state.changed("node", "probe")  # fresh free memory and disk for the UI
            if changed:
                self.state.event("node", f"runtimes now: {self.health.text()}")
                self.state.changed("runtimes", "health")

    # -- cleanup contexts, in start order (aiohttp runs them in reverse on stop) --------

    async def _client_ctx(self, app: web.Application) -> AsyncIterator[None]:
        yield
        await self.client.close()

    async def _runtimes_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.health.probe()
        log.info("runtimes: %s", self.health.text())
        await self.environments.recover()
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._probe_loop(), name="probe"),
            loop.create_task(self.environments.autostart(), name="autostart"),
        ]
        if self.settings.disk_reserve > 0:
            guard = DiskGuard(self.environments, self.settings.home, self.settings.disk_reserve)
            tasks.append(loop.create_task(guard.run(), name="disk-guard"))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.environments.stop_all()
        for runtime in self.health.runtimes.values():
            try:
                await runtime.close()
            except Exception as exc:  # a plugin's close must not stop the shutdown
                log.warning("runtime %s did not close cleanly: %s", runtime.kind, exc)

    async def _clones_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self.updates.recover()
        self.clones.recover()
        refresher = asyncio.get_running_loop().create_task(
            self.workspaces.refresh_shared(self.settings.announce_interval), name="refresh"
        )
        yield
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        await self.clones.close()
        await self.updates.close()

    async def _discovery_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.discovery.start()
        yield
        await self.discovery.stop()

    async def _system_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Sample this machine every ``sample_interval`` seconds (0: never)."""
        sampler = None
        if self.settings.sample_interval > 0:
            sampler = asyncio.get_running_loop().create_task(self.sampler.run(), name="sampler")
        yield
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await asyncio.to_thread(self.sampler.close)

    # -- running ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        app = create_app(self.parts)
        app.cleanup_ctx.extend(
            [
                self._client_ctx,
                self._runtimes_ctx,
                self._clones_ctx,
                self._discovery_ctx,
                self._system_ctx,  # stopped first: nothing depends on it
            ]
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        listener: DualListener | None = None
        try:
            listener = await self._listen(runner)
            await stop.wait()
            log.info("stopping")
        finally:
            if listener is not None:
                await listener.stop()
            await runner.cleanup()
            self.db.close()
            os.close(self._lock)

    async def _listen(self, runner: web.AppRunner) -> DualListener | None:
        """Serve the app: TLS and plain HTTP on the one port (``api.listen``), or plain
        HTTP alone with TLS turned off."""
        settings, cert = self.settings, self.parts.about.certificate
        listener = DualListener(runner, cert.server_context()) if cert else None
        try:
            if listener is not None:
                await listener.start(settings.http_host, settings.http_port)
            else:
                await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        except OSError as exc:
            raise AienvError(
                f"cannot listen on {settings.http_host}:{settings.http_port} "
                f"({exc.strerror or exc}): is another aienv node running? (see --port)"
            ) from exc
        interfaces = self.discovery.interfaces
        names = ", ".join(f"{i.name} {i.address}" for i in interfaces) or "none"
        log.info(
            "node %s (%s) listening on %s:%d (%s), announcing on: %s",
            settings.name,
            self.parts.about.identity.node_id[:12],
            settings.http_host,
            settings.http_port,
            "TLS for peers and plain HTTP" if cert else "plain HTTP only: TLS is off",
            names,
        )
        return listener


def run_node(settings: NodeSettings) -> None:
    asyncio.run(Node(settings).run())
