"""DNS-SD: advertise ``_aienv._tcp.local.`` and browse for other nodes, through zeroconf.

Bound to the same interfaces as the beacon (never zeroconf's default of every
interface). A browsed service only yields an address to poll over HTTP: what a
peer shares is always taken from its signed announcement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from aienv.discovery.interfaces import Interface

log = logging.getLogger(__name__)

SERVICE_TYPE = "_aienv._tcp.local."


class DnsSd:
    def __init__(
        self,
        node_id: str,
        node_name: str,
        http_port: int,
        interfaces: list[Interface],
        on_found: Callable[[str, str], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.node_id = node_id
        self.node_name = node_name
        self.http_port = http_port
        self.interfaces = interfaces
        self.on_found = on_found
        self.on_lost = on_lost
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.instance_name = f"{node_name}-{node_id[:8]}.{SERVICE_TYPE}"

    async def start(self) -> None:
        if not self.interfaces:
            return
        addrs = [i.address for i in self.interfaces]
        self._zc = AsyncZeroconf(interfaces=addrs, ip_version=IPVersion.V4Only)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.instance_name,
            parsed_addresses=addrs,
            port=self.http_port,
            properties={"id": self.node_id, "name": self.node_name, "proto": "1"},
        )
        await self._zc.async_register_service(info)
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if name == self.instance_name:
            return
        if state_change is ServiceStateChange.Removed:
            self.on_lost(name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, 3000):
            return
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if addresses and info.port:
            self.on_found(name, f"{addresses[0]}:{info.port}")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zc is not None:
            await self._zc.async_unregister_all_services()
            await self._zc.async_close()
            self._zc = None
