"""libvirt for the VM runtime: connections kept per URI, every libvirt error mapped
to one a person can act on, and the small lookups the runtime makes. Everything
here blocks and runs on a worker thread."""

from __future__ import annotations

import contextlib
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from aienv.errors import NotFound, RuntimeFailure
from aienv.runtime.libvirt_binding import libvirt, loaded, missing
from aienv.workspace.manifest import Environment, VmSpec


def state_name(code: int) -> str:
    """A domain state as the runtime reports it."""
    states = {
        libvirt.VIR_DOMAIN_RUNNING: "running",
        libvirt.VIR_DOMAIN_BLOCKED: "running",
        libvirt.VIR_DOMAIN_SHUTDOWN: "running",  # shutting down
        libvirt.VIR_DOMAIN_PAUSED: "paused",
        libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
        libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
        libvirt.VIR_DOMAIN_CRASHED: "crashed",
    }
    return states.get(code, "unknown")


def snapshot_info(snap: Any) -> dict[str, Any]:
    desc = ET.fromstring(snap.getXMLDesc(0))
    return {
        "name": snap.getName(),
        "created": float(desc.findtext("creationTime") or 0),
        "state": desc.findtext("state") or "unknown",
        "current": bool(snap.isCurrent(0)),
    }


def unreachable(uri: str, exc: BaseException) -> RuntimeFailure:
    return RuntimeFailure(
        f"libvirt is not reachable at {uri}: {message(exc)}; is libvirtd running?",
        code="runtime_unavailable",
    )


_events: list[threading.Thread] = []  # the one thread running libvirt's event loop
_events_lock = threading.Lock()


def start_events() -> None:
    """Run libvirt's default event loop on a daemon thread, once per process and before
    the first connection: a console stream's data arrives only through it."""
    with _events_lock:
        if _events:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # else all go to stderr
        libvirt.virEventRegisterDefaultImpl()
        _events.append(threading.Thread(target=_run_events, name="libvirt-events", daemon=True))
        _events[0].start()


def _run_events() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


class Libvirt:
    """Open connections by URI, reopened when one died; ``close`` is idempotent."""

    def __init__(self) -> None:
        self._conns: dict[str, Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    def conn(self, uri: str) -> Any:
        with self._lock:
            conn = self._conns.get(uri)
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if conn.isAlive():
                        return conn
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            start_events()
            try:
                conn = libvirt.open(uri)
            except libvirt.libvirtError as exc:
                raise unreachable(uri, exc) from exc
            self._conns[uri] = conn
            return conn

    def domain(self, handle: dict[str, Any]) -> Any:
        return self.conn(handle["uri"]).lookupByName(handle["domain"])

    @contextlib.contextmanager
    def mapped(self, what: str, uri: str) -> Iterator[None]:
        """Turn a libvirt error while doing ``what`` into one a person can act on."""
        why = missing()
        if why is not None:
            raise RuntimeFailure(why)
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
                raise unreachable(uri, exc) from exc
            raise RuntimeFailure(f"cannot {what}: {message(exc)}") from exc


def message(exc: BaseException) -> str:
    if loaded() and isinstance(exc, libvirt.libvirtError):
        return str(exc.get_error_message() or exc)
    return str(exc)


def is_system(uri: str) -> bool:
    """Whether ``uri`` reaches a privileged libvirt (whose qemu user we choose)."""
    return uri.split("?", 1)[0].rstrip("/").endswith("/system")


def vm_block(env: Environment) -> VmSpec:
    if env.vm is None:
        raise RuntimeFailure(f"environment {env.name!r} has no vm block")
    return env.vm


def lookup(conn: Any, name: str) -> Any:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def find_snapshot(dom: Any, name: str) -> Any:
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def known_snapshot(dom: Any, name: str) -> Any:
    snap = find_snapshot(dom, name)
    if snap is None:
        raise NotFound(f"the VM has no snapshot {name!r}", code="snapshot_not_found")
    return snap
