"""Runtimes are found through the entry-point group ``aienv.runtimes``.

The built-in runtimes (process, container, vm) register there too (see
pyproject.toml); a plugin package adds its own entry point and is picked up at
node start. A runtime that fails to load is reported, not fatal; one that loads
but cannot run here (no Docker engine) is kept and says why in ``available()``.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from aienv.config import NodeSettings
from aienv.names import NAME_RE
from aienv.runtime.base import Runtime

log = logging.getLogger(__name__)
GROUP = "aienv.runtimes"


def load_runtimes(settings: NodeSettings) -> tuple[dict[str, Runtime], dict[str, str]]:
    """The runtimes that loaded, and for each one that did not, why."""
    found: dict[str, Runtime] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if not NAME_RE.match(ep.name):
            broken[ep.name] = "not a valid runtime name"
            continue
        try:
            runtime = ep.load()()
            if not isinstance(runtime, Runtime):
                raise TypeError("it is not an aienv.runtime.base.Runtime")
            runtime.configure(settings)
        except Exception as exc:  # a broken plugin must not take the node down
            log.warning("runtime plugin %s failed to load: %s", ep.name, exc)
            broken[ep.name] = f"failed to load: {exc}"
            continue
        found[ep.name] = runtime
    if "process" not in found:  # running from a source tree without installed metadata
        from aienv.runtime.process import ProcessRuntime

        found["process"] = ProcessRuntime()
        found["process"].configure(settings)
    return found, broken
