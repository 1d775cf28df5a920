"""The libvirt binding, loaded when first used.

``import libvirt`` maps libvirt's C library and its dependencies: ~11 MiB of a
node's memory, which a node that never runs or probes a VM does not need. The
modules of the VM runtime take ``libvirt`` from here: an object that imports
the binding on its first attribute (once, under a lock: worker threads, the
console's event thread and the probe reach it at the same time) and hands every
attribute on; or None when libvirt-python is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any


class _Binding:
    def __init__(self) -> None:
        self._module: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        module = self._module
        if module is None:
            with self._lock:
                if self._module is None:
                    self._module = importlib.import_module("libvirt")
                module = self._module
        return getattr(module, name)


libvirt: Any = _Binding() if importlib.util.find_spec("libvirt") is not None else None


def missing() -> str | None:
    """Why the binding cannot be used on this machine, or None (loads it)."""
    if libvirt is None:
        return "the libvirt Python binding (libvirt-python) is not installed"
    try:
        libvirt.libvirtError  # noqa: B018  (its first attribute imports it)
    except ImportError as exc:
        return f"the libvirt Python binding cannot load libvirt's C library: {exc}"
    return None


def loaded() -> bool:
    """The binding has been imported (so a libvirt error may be in flight)."""
    return libvirt is not None and libvirt._module is not None
