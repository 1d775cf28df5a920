"""Runtimes are found through the entry-point group ``aienv.runtimes``.

The built-in process runtime registers there too (see pyproject.toml); a
plugin package adds its own entry point and is picked up at node start.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from aienv.runtime.base import Runtime

log = logging.getLogger(__name__)
GROUP = "aienv.runtimes"


def load_runtimes() -> dict[str, Runtime]:
    found: dict[str, Runtime] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
            runtime = cls()
        except Exception as exc:  # a broken plugin must not take the node down
            log.warning("runtime plugin %s failed to load: %s", ep.name, exc)
            continue
        if not isinstance(runtime, Runtime):
            log.warning("runtime plugin %s is not an aienv Runtime", ep.name)
            continue
        found[ep.name] = runtime
    if "process" not in found:  # running from a source tree without installed metadata
        from aienv.runtime.process import ProcessRuntime

        found["process"] = ProcessRuntime()
    return found
