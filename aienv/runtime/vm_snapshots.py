"""A VM's snapshots: internal to its qcow2 overlay, described to libvirt; and how they
go with the VM when it moves to another node (``flows.group.move``).

A move carries the environment's state folder, the overlay in it with its internal
snapshots. libvirt's description of each snapshot stays with the old node's
libvirtd, so ``export_state`` writes them into the folder (``MOVED``), oldest
first; on the new node ``adopt_state`` points the overlay at the workspace's
image where it is installed there, and ``redefine_moved`` gives libvirt back the
snapshots once the domain is defined, each with the new domain's description.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aienv.errors import Conflict, RuntimeFailure
from aienv.names import check_name
from aienv.runtime.base import Handle
from aienv.runtime.libvirt_binding import libvirt
from aienv.runtime.vm_disk import OVERLAY, rebase_overlay
from aienv.runtime.vm_libvirt import (
    Libvirt,
    find_snapshot,
    known_snapshot,
    snapshot_info,
    vm_block,
)
from aienv.workspace.manifest import Environment

log = logging.getLogger(__name__)
T = TypeVar("T")
MOVED = "snapshots.json"


class VmSnapshots:
    """The VM runtime's snapshot methods (mixed into ``VmRuntime``)."""

    _libvirt: Libvirt

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # -- snapshots (internal to the qcow2 overlay) -------------------------------

    async def snapshot_create(self, handle: Handle, name: str) -> dict[str, Any]:
        check_name(name, "snapshot name")
        return await self._run(self._snapshot_create, handle, name)

    def _snapshot_create(self, handle: Handle, name: str) -> dict[str, Any]:
        with self._libvirt.mapped(f"snapshot the VM {handle['domain']}", handle["uri"]):
            dom = self._libvirt.domain(handle)
            if find_snapshot(dom, name) is not None:
                raise Conflict(f"the VM already has a snapshot {name!r}", code="snapshot_exists")
            if not handle.get("overlay"):
                raise RuntimeFailure("a VM without a disk image has nowhere to keep snapshots")
            xml = f"<domainsnapshot><name>{name}</name></domainsnapshot>"  # a checked name
            return snapshot_info(dom.snapshotCreateXML(xml, 0))

    async def snapshot_list(self, handle: Handle) -> list[dict[str, Any]]:
        return await self._run(self._snapshot_list, handle)

    def _snapshot_list(self, handle: Handle) -> list[dict[str, Any]]:
        what = f"list the snapshots of the VM {handle['domain']}"
        with self._libvirt.mapped(what, handle["uri"]):
            snaps = [snapshot_info(s) for s in self._libvirt.domain(handle).listAllSnapshots(0)]
        return sorted(snaps, key=lambda s: (s["created"], s["name"]))

    async def snapshot_revert(self, handle: Handle, name: str) -> None:
        check_name(name, "snapshot name")
        await self._run(self._snapshot_revert, handle, name)

    def _snapshot_revert(self, handle: Handle, name: str) -> None:
        what = f"revert the VM {handle['domain']} to snapshot {name}"
        with self._libvirt.mapped(what, handle["uri"]):
            dom = self._libvirt.domain(handle)
            dom.revertToSnapshot(known_snapshot(dom, name), 0)

    async def snapshot_delete(self, handle: Handle, name: str) -> None:
        check_name(name, "snapshot name")
        await self._run(self._snapshot_delete, handle, name)

    def _snapshot_delete(self, handle: Handle, name: str) -> None:
        what = f"delete snapshot {name} of the VM {handle['domain']}"
        with self._libvirt.mapped(what, handle["uri"]):
            known_snapshot(self._libvirt.domain(handle), name).delete(0)

    # -- moving to another node ------------------------------------------------------

    async def export_state(self, handle: Handle, state_dir: Path) -> None:
        """Write libvirt's description of the VM's snapshots into ``state_dir``."""
        await self._run(self._export_state, handle, state_dir)

    def _export_state(self, handle: Handle, state_dir: Path) -> None:
        with self._libvirt.mapped(f"read the snapshots of {handle['domain']}", handle["uri"]):
            dom = self._libvirt.domain(handle)
            snaps = [(snapshot_info(s), s.getXMLDesc(0)) for s in dom.listAllSnapshots(0)]
        snaps.sort(key=lambda pair: (pair[0]["created"], pair[0]["name"]))
        moved = [{"xml": xml, "current": info["current"]} for info, xml in snaps]
        (state_dir / MOVED).write_text(json.dumps(moved))

    async def adopt_state(self, env: Environment, root: Path, state_dir: Path) -> None:
        """A state folder moved here: its overlay now backs onto this node's copy of the
        workspace's image."""
        vm = vm_block(env)
        if vm.disk is not None and (state_dir / OVERLAY).is_file():
            await asyncio.to_thread(rebase_overlay, (root / vm.disk).resolve(), state_dir)


def redefine_moved(dom: Any, state_dir: Path) -> None:
    """Give libvirt back the snapshots of a VM moved here (``MOVED``), each described
    with this domain, then forget the file; one it refuses is logged and left out."""
    path = state_dir / MOVED
    if not path.is_file():
        return
    moved = json.loads(path.read_text())
    here = ET.fromstring(dom.XMLDesc(0))
    for snap in moved:
        desc = ET.fromstring(snap["xml"])
        for tag in ("domain", "inactiveDomain"):  # the old node's domain: this one's instead
            old = desc.find(tag)
            if old is not None:
                desc.remove(old)
                if tag == "domain":
                    desc.append(copy.deepcopy(here))
                else:
                    inactive = copy.deepcopy(here)
                    inactive.tag = tag
                    desc.append(inactive)
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
        if snap.get("current"):
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
        try:
            dom.snapshotCreateXML(ET.tostring(desc, encoding="unicode"), flags)
        except libvirt.libvirtError as exc:
            log.warning("a moved snapshot of %s was not kept: %s", dom.name(), exc)
    path.unlink()
