"""The VM runtime: one persistent libvirt domain per environment, qemu under KVM or TCG.

What a launch makes, and why:

- **Disk.** A qcow2 copy-on-write overlay in the environment's state folder,
  backed by the workspace's image (raw or qcow2, named by absolute path with
  its format given explicitly), so the installed workspace stays pristine. The
  overlay is kept across stop and start (the VM keeps its disk) and across
  snapshots, which are internal to it; it is made anew only when the base image
  changed. A base image that has a backing file or an external data file of
  its own is refused: through it, a workspace from a peer could make qemu read
  any file of this machine.
- **Boot.** The workspace's kernel, initrd and command line (``console=ttyS0``
  added when it names no console), or the disk's own boot loader.
- **Console.** The first serial port is a pseudo-terminal whose output is also
  appended to the environment's log file, so ``aienv logs`` shows the boot and
  whatever the guest prints, and the terminal (``vm_console``) is that console.
- **Network.** qemu's user-mode networking (slirp: the guest is 10.0.2.15
  behind 10.0.2.2, no privileges, no bridge) with a ``hostfwd`` per endpoint:
  the planned host port on every address of the node to the endpoint's guest
  port. libvirt 9.0 (Debian bookworm) forwards ports of a user-mode interface
  only with the passt backend, which is not installed by default, so the
  ``-netdev``/``-device`` pair goes to qemu through ``<qemu:commandline>``; its
  NIC sits at a fixed PCI slot (0x1f) that libvirt's own address assignment
  never reaches first. libvirt logs such domains as "tainted: custom-argv".
- **Privileges.** libvirt's own qemu account where it can reach the VM's
  files, else the node's user with a static DAC label (``vm_user``).
- **Accelerator.** ``vm_accel = auto`` follows the plan (KVM when usable, else
  TCG; a /dev/kvm served only by ``kvm_pvm``, which runs only guest kernels
  built for it, counts as unusable); ``kvm`` or ``tcg`` override it. A host
  whose libvirt offers no KVM domains gets TCG in ``auto`` mode, with a warning.

Every libvirt call blocks, so each coroutine runs its work through ``_run``
(one ``asyncio.to_thread``); connections and the mapping of libvirt's errors to
``RuntimeFailure`` (or ``NotFound``), with libvirt's own message, are
``vm_libvirt.Libvirt``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aienv.errors import Conflict, RuntimeFailure
from aienv.runtime.base import Handle, LaunchSpec, Runtime
from aienv.runtime.libvirt_binding import libvirt, missing
from aienv.runtime.terminal import Terminal
from aienv.runtime.vm_console import ConsoleTerminal, open_console
from aienv.runtime.vm_disk import OVERLAY_META, prepare_overlay
from aienv.runtime.vm_domain import DomainConfig, domain_name, domain_xml, guest_domain_types
from aienv.runtime.vm_libvirt import (
    Libvirt,
    is_system,
    lookup,
    state_name,
    unreachable,
    vm_block,
)
from aienv.runtime.vm_snapshots import VmSnapshots, redefine_moved
from aienv.runtime.vm_user import qemu_user, qemu_who
from aienv.workspace.manifest import Environment, Resources

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.system.plan import Plan

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL = 0.5
CONNECT_TIMEOUT = 5.0
SYSTEM_SOCKET = "/run/libvirt/libvirt-sock"  # qemu:///system
SYSTEM_SOCKETS = (SYSTEM_SOCKET, "/run/libvirt/virtqemud-sock")  # monolithic, modular


def default_uri() -> str:
    """libvirt's privileged daemon for root and for a member of its group (install.sh
    puts the service's account there), else the user's own session daemon."""
    if os.geteuid() == 0 or os.access(SYSTEM_SOCKET, os.W_OK):
        return "qemu:///system"
    return "qemu:///session"


class VmRuntime(VmSnapshots, Runtime):
    kind = "vm"
    wants_accel = True
    defaults = Resources(cpus=1, memory=512 * 1024**2)

    def __init__(self) -> None:
        self.uri = default_uri()
        self.accel_setting = "auto"
        self._libvirt = Libvirt()
        self._home: Path | None = None

    def configure(self, settings: NodeSettings) -> None:
        if settings.libvirt_uri:
            self.uri = settings.libvirt_uri
        self.accel_setting = settings.vm_accel
        self._home = settings.home

    async def close(self) -> None:
        """Close the libvirt connections (idempotent; the VMs run on)."""
        self._libvirt.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """One thread hop for every libvirt call."""
        return await asyncio.to_thread(fn, *args)

    # -- what the node asks first ---------------------------------------------

    async def available(self) -> tuple[bool, str]:
        return await self._run(self._available)

    def _available(self) -> tuple[bool, str]:
        if self.uri == "qemu:///system" and not any(map(os.path.exists, SYSTEM_SOCKETS)):
            # (asked every 30 s: no daemon, no need to load the binding to say so)
            return False, f"libvirtd is not running (no socket at {SYSTEM_SOCKET})"
        why = missing()
        if why is not None:
            return False, why
        box: dict[str, Any] = {}

        def probe() -> None:
            try:
                conn = libvirt.openReadOnly(self.uri)
                try:
                    box["caps"] = conn.getCapabilities()
                finally:
                    conn.close()
            except libvirt.libvirtError as exc:
                box["error"] = exc

        thread = threading.Thread(target=probe, name="libvirt-probe", daemon=True)
        thread.start()
        thread.join(CONNECT_TIMEOUT)
        if thread.is_alive():
            return False, (
                f"libvirt at {self.uri} did not answer within {CONNECT_TIMEOUT:g} s; "
                "is libvirtd running?"
            )
        if "error" in box:
            return False, unreachable(self.uri, box["error"]).message
        arch = platform.machine()
        if not guest_domain_types(box["caps"], arch):
            return False, (
                f"libvirt at {self.uri} knows no qemu emulator for {arch}: "
                "install qemu-system-x86 (or your architecture's qemu-system package)"
            )
        return True, ""

    async def check(self, env: Environment, root: Path) -> None:
        await self._run(_check_files, env, root)

    def confinement(self, env: Environment, plan: Plan) -> list[str]:
        who = qemu_who(is_system(self.uri), self._home)
        return [
            f"a VM: qemu through libvirt ({self.uri}), {self._accel(plan).upper()}, as {who}",
            "the guest sees its own disk (a copy-on-write overlay) and kernel, nothing of the "
            "host's files",
            "user-mode network: it reaches out through the host, only its endpoints reach in",
        ]

    def _accel(self, plan: Plan) -> str:
        """The setting when given, else the plan's choice (``kvm_status`` already counts a
        PVM-only /dev/kvm as unusable)."""
        if self.accel_setting in ("kvm", "tcg"):
            return self.accel_setting
        return plan.accel or "tcg"

    # -- launch ----------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> Handle:
        """Define the domain, let the node record it, then start it: a node killed in
        between finds a defined VM that is not running, never an unknown running one."""
        await self.check(spec.environment, spec.root)
        handle = await self._run(self._define, spec, self._accel(spec.plan))
        if spec.record is not None:
            spec.record(handle)
        await self._run(self._start, handle)
        return handle

    def _start(self, handle: Handle) -> None:
        with self._libvirt.mapped(f"start the VM {handle['domain']}", handle["uri"]):
            self._libvirt.domain(handle).create()

    def _define(self, spec: LaunchSpec, accel: str) -> Handle:
        vm, uri = vm_block(spec.environment), self.uri
        prev = spec.previous or {}
        name = domain_name(spec.env_id, spec.node_id)
        if prev.get("uri") == uri and str(prev.get("domain", "")).startswith("aienv-"):
            name = prev["domain"]  # the same domain as last time, whatever names it now
        with self._libvirt.mapped(f"define the VM {name}", uri):
            conn = self._libvirt.conn(uri)
            existing = lookup(conn, name)
            if existing is not None and existing.isActive():
                raise Conflict(
                    f"the VM {name} is already running (left from an earlier run?); "
                    f"stop it with: virsh -c {uri} destroy {name}"
                )
            if accel == "kvm" and "kvm" not in guest_domain_types(
                conn.getCapabilities(), platform.machine()
            ):
                if self.accel_setting == "kvm":
                    raise RuntimeFailure(
                        f"libvirt at {uri} offers no KVM domains (vm_accel is 'kvm'): "
                        "check /dev/kvm, or set vm_accel to 'auto' or 'tcg'"
                    )
                log.warning("libvirt at %s offers no KVM domains: %s runs under TCG", uri, name)
                accel = "tcg"
            overlay, fresh = None, False
            if vm.disk is not None:
                overlay, fresh = prepare_overlay((spec.root / vm.disk).resolve(), spec.state_dir)
            if existing is not None and fresh:  # its snapshots lived in the replaced overlay
                existing.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            cfg = DomainConfig(
                name=name,
                accel=accel,
                memory_kib=max(1, (spec.plan.memory or self.defaults.memory or 0) // 1024),
                vcpus=max(1, math.ceil(spec.plan.cpus or self.defaults.cpus or 1)),
                log_path=spec.log_path,
                disk=overlay,
                kernel=(spec.root / vm.kernel).resolve() if vm.kernel else None,
                initrd=(spec.root / vm.initrd).resolve() if vm.initrd else None,
                cmdline=vm.cmdline,
                forwards=[(spec.ports[ep.name], ep.port) for ep in spec.environment.endpoints],
                uuid=existing.UUIDString() if existing is not None else None,
                user=qemu_user(is_system(uri), [spec.root, spec.state_dir, spec.log_path.parent]),
                description=f"aienv environment {spec.env_id}",
            )
            dom = conn.defineXMLFlags(domain_xml(cfg), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            redefine_moved(dom, spec.state_dir)  # the snapshots of a VM moved here
        return {
            "domain": name,
            "uuid": dom.UUIDString(),
            "overlay": str(overlay) if overlay else None,
            "uri": uri,
            "accel": accel,
            "vcpus": cfg.vcpus,
            "memory": cfg.memory_kib * 1024,
        }

    # -- watching and stopping ---------------------------------------------------

    def _state(self, handle: Handle) -> tuple[str, int]:
        """("running" | "paused" | "shutoff" | "crashed" | "gone" | ..., libvirt's reason)."""
        with self._libvirt.mapped(f"ask about the VM {handle['domain']}", handle["uri"]):
            dom = lookup(self._libvirt.conn(handle["uri"]), handle["domain"])
            if dom is None:
                return "gone", 0
            state, reason = dom.state()
        return state_name(state), int(reason)

    async def wait(self, handle: Handle) -> int | None:
        """0 when the VM shut off, 1 when it crashed or failed, None when it is gone."""
        while True:
            try:
                state, reason = await self._run(self._state, handle)
            except RuntimeFailure as exc:  # libvirtd restarting: the VM may well run on
                log.debug("waiting for %s: %s", handle["domain"], exc)
                await asyncio.sleep(POLL * 4)
                continue
            if state == "gone":
                return None
            if state == "crashed":
                return 1
            if state == "shutoff":
                failed = (libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, libvirt.VIR_DOMAIN_SHUTOFF_FAILED)
                return 1 if reason in failed else 0
            await asyncio.sleep(POLL)

    async def is_running(self, handle: Handle) -> bool:
        return (await self._run(self._state, handle))[0] in ("running", "paused")

    async def stop(self, handle: Handle, timeout: float) -> None:
        """ACPI shutdown, then destroy after ``timeout``; the definition and disk stay."""
        await self._run(self._stop, handle, timeout)

    def _stop(self, handle: Handle, timeout: float) -> None:
        name = handle["domain"]
        with self._libvirt.mapped(f"stop the VM {name}", handle["uri"]):
            dom = lookup(self._libvirt.conn(handle["uri"]), name)
            if dom is None or not dom.isActive():
                return
            if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                with contextlib.suppress(libvirt.libvirtError):  # it may have just stopped
                    dom.shutdown()
                deadline = time.monotonic() + timeout
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(0.1)
            if dom.isActive():
                log.info("the VM %s did not shut down within %g s: destroying it", name, timeout)
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    if dom.isActive():
                        raise

    async def remove(self, handle: Handle) -> None:
        await self._run(self._remove, handle)

    def _remove(self, handle: Handle) -> None:
        name = handle["domain"]
        with self._libvirt.mapped(f"remove the VM {name}", handle["uri"]):
            dom = lookup(self._libvirt.conn(handle["uri"]), name)
            if dom is not None:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                )
        if handle.get("overlay"):
            overlay = Path(handle["overlay"])
            overlay.unlink(missing_ok=True)
            (overlay.parent / OVERLAY_META).unlink(missing_ok=True)

    async def terminal(self, spec: LaunchSpec, handle: Handle) -> Terminal:
        """The VM's serial console: what the guest runs there (a shell, a login)."""
        return ConsoleTerminal(await self._run(open_console, self._libvirt, handle))

    def details(self, handle: Handle) -> dict[str, Any]:
        return {
            "domain": handle.get("domain"),
            "accel": handle.get("accel"),
            "overlay": handle.get("overlay"),
            "libvirt_uri": handle.get("uri"),
        }


def _check_files(env: Environment, root: Path) -> None:
    """The VM's disk, kernel and initrd are files inside the workspace (blocks)."""
    vm = vm_block(env)
    top = root.resolve()
    for what, rel in (("disk image", vm.disk), ("kernel", vm.kernel), ("initrd", vm.initrd)):
        if rel is None:
            continue
        path = root / rel
        if not path.is_file():
            raise RuntimeFailure(f"the vm's {what} {rel!r} is not in the workspace ({path})")
        if not path.resolve().is_relative_to(top):
            raise RuntimeFailure(f"the vm's {what} {rel!r} points outside the workspace")
