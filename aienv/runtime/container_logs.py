"""A container's output copied to its environment's log file, one thread per
container (the SDK's log stream blocks for as long as the container runs)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from aienv.dockerengine import Engine, sdk_errors

log = logging.getLogger(__name__)

DRAIN = 2.0  # how long to wait for a copier to write a container's last lines


class LogCopiers:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._threads: dict[str, threading.Thread] = {}  # container id -> its copier

    def copying(self, ident: str) -> bool:
        return ident in self._threads

    def start(self, ident: str, path: Path, since: int | None) -> None:
        """Copy what container ``ident`` prints (after ``since``, unix seconds) to ``path``."""
        running = self._threads.get(ident)
        if running is not None and running.is_alive():
            return
        thread = threading.Thread(
            target=self._copy, args=(ident, path, since), name=f"aienv-logs-{ident[:12]}"
        )
        thread.daemon = True
        self._threads[ident] = thread
        thread.start()

    def _copy(self, ident: str, path: Path, since: int | None) -> None:
        """Runs on its own thread until the container ends or is removed."""
        try:
            with path.open("ab") as out:
                stream = self.engine.client(bulk=True).api.logs(
                    ident, stdout=True, stderr=True, stream=True, follow=True, since=since
                )
                for chunk in stream:
                    out.write(chunk)
                    out.flush()
        except (sdk_errors().DockerException, OSError) as exc:
            log.debug("log copy of container %s ended: %s", ident[:12], exc)

    async def drain(self, ident: str) -> None:
        """Let the copier of a container that ended write its last lines."""
        thread = self._threads.pop(ident, None)
        if thread is not None:
            await asyncio.to_thread(thread.join, DRAIN)
