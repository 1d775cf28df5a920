"""The node: wiring of every part and its lifecycle in one asyncio loop.

Start: folders and identity, state (SQLite), recovery of clones and
environments, then the HTTP app whose startup brings up runtimes, clones and
discovery. Stop (SIGINT/SIGTERM): HTTP sites first, then the goodbye
announcement and discovery, the clone tasks, and last the runtimes.
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
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from aienv.api.app import create_app
from aienv.config import NodeSettings
from aienv.discovery.codec import SharedWorkspace
from aienv.discovery.interfaces import select_interfaces
from aienv.discovery.service import DiscoveryService
from aienv.errors import AienvError
from aienv.identity import Identity
from aienv.runtime.manager import EnvironmentManager
from aienv.runtime.registry import load_runtimes
from aienv.security import WORKSPACE_PASSWORD
from aienv.security.allow import AllowList
from aienv.security.tls import Certificate, ensure_certificate
from aienv.state.db import Database
from aienv.state.store import StateStore
from aienv.system import inventory
from aienv.system.sampler import Sampler
from aienv.transfer.clone import CloneManager
from aienv.transfer.holdings import Holdings
from aienv.transfer.progress import Transfers
from aienv.transfer.serve import UploadSlots
from aienv.workspace.store import WorkspaceStore

log = logging.getLogger(__name__)
PROBE_INTERVAL = 30.0  # seconds between runtime health checks


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


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        settings.make_dirs()
        self._lock = _lock_home(settings.home)
        for stale in settings.tmp_dir.iterdir():  # staging left by a crash: never a workspace
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        self.identity = Identity.load_or_create(settings.key_path)
        self.certificate: Certificate | None = (
            ensure_certificate(settings.tls_dir, settings.name) if settings.tls else None
        )
        self.db = Database(settings.db_path)
        self.state = StateStore(self.db)
        self.transfers = Transfers()
        self.holdings = Holdings(settings, self.state, self._archives_changed)
        self.uploads = UploadSlots(settings.max_uploads, self.transfers)
        self.workspaces = WorkspaceStore(settings, self.state, self.holdings, self.transfers)
        self.runtimes, self.broken_runtimes = load_runtimes(settings)
        self.runtime_health: dict[str, tuple[bool, str]] = {
            name: (False, "not probed yet") for name in self.runtimes
        }
        # measured by probe() at start, before anything announces it
        self.capacity = inventory.Capacity(cpus=0, memory_free=0, disk_free=0)
        self.interfaces = select_interfaces(settings.interfaces)
        self.allow = AllowList(settings.allow)
        self.environments = EnvironmentManager(
            settings,
            self.state,
            self.workspaces,
            self.runtimes,
            lan_address=next(
                (i.address for i in self.interfaces if not i.address.startswith("127.")), None
            ),
            node_id=self.identity.node_id,
            broken=self.broken_runtimes,
        )
        self.discovery = DiscoveryService(
            identity=self.identity,
            node_name=settings.name,
            http_port=settings.http_port,
            group=settings.multicast_group,
            port=settings.discovery_port,
            interval=settings.announce_interval,
            interfaces=self.interfaces,
            shared=self.shared,
            manual_peers=self.state.manual_peers,
            on_peer_change=self._peer_changed,
            dnssd=settings.dnssd,
            archives=self.holdings.announced,
            resources=lambda: inventory.summary(self.capacity, self.runtime_health),
            allowed=self.allow.allows,
            tls_fingerprint=self.certificate.fingerprint if self.certificate else None,
        )
        self.holdings.guarded = self.discovery.peers.protected
        self.clones = CloneManager(
            settings,
            self.state,
            self.workspaces,
            self.environments,
            lambda: self.discovery,
            self.transfers,
            self.holdings,
        )
        self.sampler = Sampler(
            self.state,
            settings.docker_host,
            settings.sample_interval,
            containers_usable=lambda: self.runtime_health.get("container", (False, ""))[0],
        )
        self.started = time.monotonic()
        self._shared: tuple[int, list[SharedWorkspace]] | None = None

    def shared(self) -> list[SharedWorkspace]:
        """What this node shares, as it announces it. Every announcement and every peer's
        poll asks; it is built again only after a change in the state store (a share, an
        archive packed, a password set: each bumps ``state.version``)."""
        version = self.state.version
        if self._shared is None or self._shared[0] != version:
            self._shared = (version, self._build_shared())
        return list(self._shared[1])

    def _build_shared(self) -> list[SharedWorkspace]:
        out = []
        protected = self.state.credentials(WORKSPACE_PASSWORD)
        for ws in self.workspaces.all():
            if ws.record.shared and ws.archive is not None:
                out.append(
                    SharedWorkspace(
                        name=ws.record.name,
                        version=ws.manifest.version,
                        digest=ws.archive.digest,
                        size=ws.archive.size,
                        runtimes=ws.manifest.runtimes,
                        tags=list(ws.manifest.tags),
                        languages=list(ws.manifest.languages),
                        tools=list(ws.manifest.tools),
                        protected=ws.record.name in protected,
                    )
                )
        return out

    def _archives_changed(self) -> None:
        discovery = getattr(self, "discovery", None)
        if discovery is not None:
            discovery.announce_now()

    def _peer_changed(self, change: str, node_id: str, message: str) -> None:
        self.state.changed("peer", node_id)
        if change != "updated":
            self.state.event("security" if change == "conflict" else "peer", message)

    async def _refresh_shared(self) -> None:
        """Re-pack a shared workspace whose files changed, and announce the new digest."""
        while True:
            await asyncio.sleep(self.settings.announce_interval)
            for ws in self.workspaces.all():
                if not ws.record.shared:
                    continue
                before = ws.archive.digest if ws.archive else None
                try:
                    record = await self.workspaces.ensure_archive(ws.record.name)
                except (AienvError, OSError) as exc:
                    log.warning("cannot re-pack shared workspace %s: %s", ws.record.name, exc)
                    continue
                if record.digest != before:
                    self.state.event("share", f"workspace {ws.record.name} changed; new archive")
                    self.discovery.announce_now()

    # -- cleanup contexts, in start order (aiohttp runs them in reverse on stop) ----

    def probe(self) -> None:
        """Ask every runtime whether it can run here, and measure the machine (blocking)."""
        health = {}
        for name, runtime in self.runtimes.items():
            try:
                health[name] = runtime.available()
            except Exception as exc:  # a plugin's probe must not break the node
                health[name] = (False, f"its availability check failed: {exc}")
        for name, why in self.broken_runtimes.items():
            health[name] = (False, why)
        self.runtime_health = health
        self.capacity = inventory.capacity(self.settings.home)

    async def _probe_loop(self) -> None:
        """Keep runtime health and free resources fresh for announcements and the API."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            before = self.runtime_health
            await asyncio.to_thread(self.probe)
            self.state.changed("node", "probe")  # fresh free memory and disk for the UI
            if before != self.runtime_health:
                self.state.event("node", f"runtimes now: {self._health_text()}")
                self.discovery.announce_now()

    def _health_text(self) -> str:
        return ", ".join(
            f"{name} {'available' if ok else 'unavailable'}"
            for name, (ok, _) in sorted(self.runtime_health.items())
        )

    async def _runtimes_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await asyncio.to_thread(self.probe)
        log.info("runtimes: %s", self._health_text())
        await self.environments.recover()
        prober = asyncio.get_running_loop().create_task(self._probe_loop())
        starter = asyncio.get_running_loop().create_task(self.environments.autostart())
        yield
        for task in (prober, starter):
            task.cancel()
        await asyncio.gather(prober, starter, return_exceptions=True)
        await self.environments.stop_all()
        for runtime in self.runtimes.values():
            try:
                runtime.close()
            except Exception as exc:  # a plugin's close must not stop the shutdown
                log.warning("runtime %s did not close cleanly: %s", runtime.kind, exc)

    async def _clones_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self.clones.recover()
        refresher = asyncio.get_running_loop().create_task(self._refresh_shared())
        yield
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        await self.clones.async_close()

    async def _system_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Sample this machine every ``sample_interval`` seconds (0: never)."""
        sampler = None
        if self.settings.sample_interval > 0:
            sampler = asyncio.get_running_loop().create_task(self.sampler.async_run())
        yield
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await asyncio.to_thread(self.sampler.close)

    async def _discovery_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.discovery.async_start()
        yield
        await self.discovery.async_stop()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        app = create_app(self)
        app.cleanup_ctx.extend([self._runtimes_ctx, self._clones_ctx, self._discovery_ctx])
        app.cleanup_ctx.append(self._system_ctx)  # stopped first: nothing depends on it
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            tls = self.certificate.server_context() if self.certificate else None
            site = web.TCPSite(
                runner, self.settings.http_host, self.settings.http_port, ssl_context=tls
            )
            try:
                await site.start()
            except OSError as exc:
                raise AienvError(
                    f"cannot listen on {self.settings.http_host}:{self.settings.http_port} "
                    f"({exc.strerror or exc}): is another aienv node running? (see --port)"
                ) from exc
            names = ", ".join(f"{i.name} {i.address}" for i in self.interfaces) or "none"
            log.info(
                "node %s (%s) listening on %s://%s:%d, announcing on: %s",
                self.settings.name,
                self.identity.node_id[:12],
                "https" if tls else "http",
                self.settings.http_host,
                self.settings.http_port,
                names,
            )
            await stop.wait()
            log.info("stopping")
        finally:
            await runner.cleanup()
            self.db.close()
            os.close(self._lock)


def run_node(settings: NodeSettings) -> None:
    asyncio.run(Node(settings).run())
