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
- **Console.** The first serial port is appended to the environment's log
  file, so ``aienv logs`` shows the boot and whatever the guest prints.
- **Network.** qemu's user-mode networking (slirp: the guest is 10.0.2.15
  behind 10.0.2.2, no privileges, no bridge) with a ``hostfwd`` per endpoint:
  the planned host port on every address of the node to the endpoint's guest
  port. libvirt 9.0 (Debian bookworm) forwards ports of a user-mode interface
  only with the passt backend, which is not installed by default, so the
  ``-netdev``/``-device`` pair goes to qemu through ``<qemu:commandline>``; its
  NIC sits at a fixed PCI slot (0x1f) that libvirt's own address assignment
  never reaches first. libvirt logs such domains as "tainted: custom-argv".
- **Privileges.** qemu runs as the node's own user and group with no file
  relabelling (a static DAC label), so it can read the workspace under the
  node's 0700 home and no libvirt setting has to change.
- **Accelerator.** ``vm_accel = auto`` follows the plan (KVM when usable, else
  TCG; a /dev/kvm served only by ``kvm_pvm``, which runs only guest kernels
  built for it, counts as unusable); ``kvm`` or ``tcg`` override it. A host
  whose libvirt offers no KVM domains gets TCG in ``auto`` mode, with a warning.

Every libvirt call blocks, so each public coroutine runs its work through
``_run`` (one ``asyncio.to_thread``); libvirt errors become ``RuntimeFailure``
(or ``NotFound``) in ``_mapped``, with libvirt's own message.
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
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aienv.errors import Conflict, NotFound, RuntimeFailure
from aienv.names import check_name
from aienv.runtime.base import LaunchSpec, Runtime
from aienv.runtime.vm_disk import OVERLAY_META, prepare_overlay
from aienv.runtime.vm_domain import DomainConfig, domain_name, domain_xml, guest_domain_types
from aienv.workspace.manifest import Environment, Resources, VmSpec

try:
    import libvirt
except ImportError:  # the binding needs the C library; available() says so
    libvirt = None

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.system.plan import Plan

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL = 0.5
CONNECT_TIMEOUT = 5.0
_STATES: dict[int, str] = {}
if libvirt is not None:
    _STATES = {
        libvirt.VIR_DOMAIN_RUNNING: "running",
        libvirt.VIR_DOMAIN_BLOCKED: "running",
        libvirt.VIR_DOMAIN_SHUTDOWN: "running",  # shutting down
        libvirt.VIR_DOMAIN_PAUSED: "paused",
        libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
        libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
        libvirt.VIR_DOMAIN_CRASHED: "crashed",
    }


def _snapshot_info(snap: Any) -> dict[str, Any]:
    desc = ET.fromstring(snap.getXMLDesc(0))
    return {
        "name": snap.getName(),
        "created": float(desc.findtext("creationTime") or 0),
        "state": desc.findtext("state") or "unknown",
        "current": bool(snap.isCurrent(0)),
    }


class VmRuntime(Runtime):
    kind = "vm"
    wants_accel = True
    defaults = Resources(cpus=1, memory=512 * 1024**2)

    def __init__(self) -> None:
        self.uri = "qemu:///system" if os.geteuid() == 0 else "qemu:///session"
        self.accel_setting = "auto"
        self._conns: dict[str, Any] = {}
        self._lock = threading.Lock()
        if libvirt is not None:  # libvirt prints every error to stderr unless told otherwise
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

    def configure(self, settings: NodeSettings) -> None:
        if settings.libvirt_uri:
            self.uri = settings.libvirt_uri
        self.accel_setting = settings.vm_accel

    def close(self) -> None:
        """Close the libvirt connections (idempotent; the VMs run on)."""
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    # -- libvirt access: one thread hop, one error mapping -------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def _unreachable(self, uri: str, exc: BaseException) -> RuntimeFailure:
        return RuntimeFailure(
            f"libvirt is not reachable at {uri}: {_message(exc)}; is libvirtd running?",
            code="runtime_unavailable",
        )

    def _conn(self, uri: str) -> Any:
        with self._lock:
            conn = self._conns.get(uri)
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if conn.isAlive():
                        return conn
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            try:
                conn = libvirt.open(uri)
            except libvirt.libvirtError as exc:
                raise self._unreachable(uri, exc) from exc
            self._conns[uri] = conn
            return conn

    @contextlib.contextmanager
    def _mapped(self, what: str, uri: str) -> Iterator[None]:
        """Turn a libvirt error while doing ``what`` into one a person can act on."""
        if libvirt is None:
            raise RuntimeFailure("the libvirt Python binding is not installed")
        try:
            yield
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(
                    f"cannot {what}: its VM is no longer defined in libvirt at {uri}",
                    code="vm_not_found",
                ) from exc
            if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise NotFound(
                    f"cannot {what}: no such snapshot", code="snapshot_not_found"
                ) from exc
            if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC) or (
                code == libvirt.VIR_ERR_SYSTEM_ERROR
                and exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
            ):
                with self._lock:
                    self._conns.pop(uri, None)
                raise self._unreachable(uri, exc) from exc
            raise RuntimeFailure(f"cannot {what}: {_message(exc)}") from exc

    def _domain(self, handle: dict[str, Any]) -> Any:
        return self._conn(handle["uri"]).lookupByName(handle["domain"])

    # -- what the node asks first ---------------------------------------------

    def available(self) -> tuple[bool, str]:
        if libvirt is None:
            return False, "the libvirt Python binding (libvirt-python) is not installed"
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
            return False, self._unreachable(self.uri, box["error"]).message
        arch = platform.machine()
        if not guest_domain_types(box["caps"], arch):
            return False, (
                f"libvirt at {self.uri} knows no qemu emulator for {arch}: "
                "install qemu-system-x86 (or your architecture's qemu-system package)"
            )
        return True, ""

    def check(self, env: Environment, root: Path) -> None:
        vm = _vm_block(env)
        top = root.resolve()
        for what, rel in (("disk image", vm.disk), ("kernel", vm.kernel), ("initrd", vm.initrd)):
            if rel is None:
                continue
            path = root / rel
            if not path.is_file():
                raise RuntimeFailure(f"the vm's {what} {rel!r} is not in the workspace ({path})")
            if not path.resolve().is_relative_to(top):
                raise RuntimeFailure(f"the vm's {what} {rel!r} points outside the workspace")

    def _accel(self, plan: Plan) -> str:
        """The setting when given, else the plan's choice (``kvm_status`` already counts a
        PVM-only /dev/kvm as unusable)."""
        if self.accel_setting in ("kvm", "tcg"):
            return self.accel_setting
        return plan.accel or "tcg"

    # -- launch ----------------------------------------------------------------

    async def async_launch(self, spec: LaunchSpec) -> dict[str, Any]:
        """Define the domain, let the node record it, then start it: a node killed in
        between finds a defined VM that is not running, never an unknown running one."""
        self.check(spec.environment, spec.root)
        handle = await self._run(self._define, spec, self._accel(spec.plan))
        if spec.record is not None:
            spec.record(handle)
        await self._run(self._start, handle)
        return handle

    def _start(self, handle: dict[str, Any]) -> None:
        with self._mapped(f"start the VM {handle['domain']}", handle["uri"]):
            self._domain(handle).create()

    def _define(self, spec: LaunchSpec, accel: str) -> dict[str, Any]:
        vm, uri = _vm_block(spec.environment), self.uri
        prev = spec.previous or {}
        name = domain_name(spec.env_id, spec.node_id)
        if prev.get("uri") == uri and str(prev.get("domain", "")).startswith("aienv-"):
            name = prev["domain"]  # the same domain as last time, whatever names it now
        with self._mapped(f"define the VM {name}", uri):
            conn = self._conn(uri)
            existing = _lookup(conn, name)
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
                user=(os.getuid(), os.getgid()) if _is_system(uri) else None,
                description=f"aienv environment {spec.env_id}",
            )
            dom = conn.defineXMLFlags(domain_xml(cfg), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
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

    def _state(self, handle: dict[str, Any]) -> tuple[str, int]:
        """("running" | "paused" | "shutoff" | "crashed" | "gone" | ..., libvirt's reason)."""
        with self._mapped(f"ask about the VM {handle['domain']}", handle["uri"]):
            dom = _lookup(self._conn(handle["uri"]), handle["domain"])
            if dom is None:
                return "gone", 0
            state, reason = dom.state()
        return _STATES.get(state, "unknown"), int(reason)

    async def async_wait(self, handle: dict[str, Any]) -> int | None:
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

    def is_running(self, handle: dict[str, Any]) -> bool:
        return self._state(handle)[0] in ("running", "paused")

    async def async_stop(self, handle: dict[str, Any], timeout: float) -> None:
        """ACPI shutdown, then destroy after ``timeout``; the definition and disk stay."""
        await self._run(self._stop, handle, timeout)

    def _stop(self, handle: dict[str, Any], timeout: float) -> None:
        name = handle["domain"]
        with self._mapped(f"stop the VM {name}", handle["uri"]):
            dom = _lookup(self._conn(handle["uri"]), name)
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

    async def async_remove(self, handle: dict[str, Any]) -> None:
        await self._run(self._remove, handle)

    def _remove(self, handle: dict[str, Any]) -> None:
        name = handle["domain"]
        with self._mapped(f"remove the VM {name}", handle["uri"]):
            dom = _lookup(self._conn(handle["uri"]), name)
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

    def details(self, handle: dict[str, Any]) -> dict[str, Any]:
        return {
            "domain": handle.get("domain"),
            "accel": handle.get("accel"),
            "overlay": handle.get("overlay"),
            "libvirt_uri": handle.get("uri"),
        }

    # -- snapshots (internal to the qcow2 overlay) -------------------------------

    async def async_snapshot_create(self, handle: dict[str, Any], name: str) -> dict[str, Any]:
        check_name(name, "snapshot name")
        return await self._run(self._snapshot_create, handle, name)

    def _snapshot_create(self, handle: dict[str, Any], name: str) -> dict[str, Any]:
        with self._mapped(f"snapshot the VM {handle['domain']}", handle["uri"]):
            dom = self._domain(handle)
            if _snapshot(dom, name) is not None:
                raise Conflict(f"the VM already has a snapshot {name!r}", code="snapshot_exists")
            if not handle.get("overlay"):
                raise RuntimeFailure("a VM without a disk image has nowhere to keep snapshots")
            xml = f"<domainsnapshot><name>{name}</name></domainsnapshot>"  # a checked name
            return _snapshot_info(dom.snapshotCreateXML(xml, 0))

    async def async_snapshot_list(self, handle: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._run(self._snapshot_list, handle)

    def _snapshot_list(self, handle: dict[str, Any]) -> list[dict[str, Any]]:
        with self._mapped(f"list the snapshots of the VM {handle['domain']}", handle["uri"]):
            snaps = [_snapshot_info(s) for s in self._domain(handle).listAllSnapshots(0)]
        return sorted(snaps, key=lambda s: (s["created"], s["name"]))

    async def async_snapshot_revert(self, handle: dict[str, Any], name: str) -> None:
        check_name(name, "snapshot name")
        await self._run(self._snapshot_revert, handle, name)

    def _snapshot_revert(self, handle: dict[str, Any], name: str) -> None:
        with self._mapped(f"revert the VM {handle['domain']} to snapshot {name}", handle["uri"]):
            dom = self._domain(handle)
            dom.revertToSnapshot(_known_snapshot(dom, name), 0)

    async def async_snapshot_delete(self, handle: dict[str, Any], name: str) -> None:
        check_name(name, "snapshot name")
        await self._run(self._snapshot_delete, handle, name)

    def _snapshot_delete(self, handle: dict[str, Any], name: str) -> None:
        with self._mapped(f"delete snapshot {name} of the VM {handle['domain']}", handle["uri"]):
            _known_snapshot(self._domain(handle), name).delete(0)


# -- helpers that run in the worker thread ----------------------------------------


def _message(exc: BaseException) -> str:
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return str(exc.get_error_message() or exc)
    return str(exc)


def _is_system(uri: str) -> bool:
    """Whether ``uri`` reaches a privileged libvirt (whose qemu user we choose)."""
    return uri.split("?", 1)[0].rstrip("/").endswith("/system")


def _vm_block(env: Environment) -> VmSpec:
    if env.vm is None:
        raise RuntimeFailure(f"environment {env.name!r} has no vm block")
    return env.vm


def _lookup(conn: Any, name: str) -> Any:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _snapshot(dom: Any, name: str) -> Any:
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def _known_snapshot(dom: Any, name: str) -> Any:
    snap = _snapshot(dom, name)
    if snap is None:
        raise NotFound(f"the VM has no snapshot {name!r}", code="snapshot_not_found")
    return snap
