"""``aienv serve`` with one fault injected: the node stalls in the middle of a launch.

    stalled_node.py MODE MARK serve ARGS...

MODE says where the node stalls, right after the moment that makes an
environment exist outside the node and before the launch returns:

``spawn``            the process runtime's child process has been created;
``container-start``  the Docker engine has started the container;
``manifest-sync``    a new workspace.yaml has been written and is being synced,
                     not yet renamed into place (an edit).

The node then writes the child's pid (the container's id, the file's path) to
the file MARK and stalls there for an hour, still serving its API, so a test
can kill it with SIGKILL inside that window. Only the first such moment
stalls; later ones run as usual.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aienv.cli.main import main

STALL = 3600.0
MODE, MARK = sys.argv[1], Path(sys.argv[2])
_fired = threading.Event()


def _first() -> bool:
    """True once: for the first launch that reaches the stall point."""
    if _fired.is_set():
        return False
    _fired.set()
    return True


if MODE == "spawn":
    _spawn = asyncio.create_subprocess_exec

    async def _stalled_spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await _spawn(*args, **kwargs)
        if kwargs.get("start_new_session") and _first():  # an environment, not a helper
            MARK.write_text(str(proc.pid))  # noqa: ASYNC240 - a few bytes, then a stall
            await asyncio.sleep(STALL)
        return proc

    asyncio.create_subprocess_exec = _stalled_spawn
elif MODE == "container-start":
    from docker.models.containers import Container

    _start = Container.start

    def _stalled_start(self: Container, **kwargs: Any) -> Any:
        result = _start(self, **kwargs)
        if _first():
            MARK.write_text(str(self.id))
            time.sleep(STALL)  # a worker thread: the event loop keeps serving
        return result

    Container.start = _stalled_start
elif MODE == "manifest-sync":
    _fsync = os.fsync

    def _stalled_fsync(fd: Any) -> None:
        _fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
        if "workspace.yaml" in os.path.basename(path) and _first():
            MARK.write_text(path)
            time.sleep(STALL)  # edits write in a worker thread: the event loop keeps serving

    os.fsync = _stalled_fsync
else:
    raise SystemExit(f"unknown mode {MODE!r}")

sys.argv = ["aienv", *sys.argv[3:]]
main()
