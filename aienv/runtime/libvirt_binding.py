"""The libvirt binding, loaded when first used.

``import libvirt`` maps libvirt's C library and its dependencies: ~11 MiB of a
node's memory, which a node that never runs or probes a VM does not need. The
modules of the VM runtime import ``libvirt`` from here: a module whose code runs
on its first attribute, or None when libvirt-python is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


def _lazy(name: str) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return None
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


libvirt: Any = _lazy("libvirt")


def missing() -> str | None:
    """Why the binding cannot be used on this machine, or None (loads it)."""
    if libvirt is None:
        return "the libvirt Python binding (libvirt-python) is not installed"
    try:
        libvirt.libvirtError  # noqa: B018  (its first attribute runs the module)
    except ImportError as exc:
        return f"the libvirt Python binding cannot load libvirt's C library: {exc}"
    return None


def loaded() -> bool:
    """The binding has been loaded (so a libvirt error may be in flight)."""
    return type(libvirt) is types.ModuleType
