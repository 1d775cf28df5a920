"""A shell in a running environment, for the web page's terminal and ``aienv shell``.

A ``Terminal`` is a byte stream both ways plus a window size. A process
environment's shell is a child on a new pseudo-terminal (``PtyTerminal``), started
in the same sandbox as the environment; a container's is ``docker exec`` with a
TTY (``dockerengine``'s ``ExecTerminal``). Either ends when its shell exits, or when
``close`` hangs it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import signal
import struct
import termios
from abc import ABC, abstractmethod
from pathlib import Path

READ_SIZE = 65536


class Terminal(ABC):
    exit_code: int | None = None

    @abstractmethod
    async def read(self) -> bytes:
        """What the shell wrote since the last read; ``b""`` once it ended."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Keys typed (and pasted) into the shell."""

    @abstractmethod
    async def resize(self, cols: int, rows: int) -> None:
        """The window's size in characters."""

    @abstractmethod
    async def close(self) -> None:
        """Hang up: end the shell and what it started (idempotent)."""


def _take_terminal() -> None:
    """In the child, after ``setsid``: make stdin (the new PTY) its controlling terminal,
    so the shell has job control and Ctrl-C reaches what it runs."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyTerminal(Terminal):
    """``argv`` on a new pseudo-terminal, in its own session; the node holds the master."""

    def __init__(self, master: int, proc: asyncio.subprocess.Process) -> None:
        self.master = master
        self.proc = proc
        self._closed = False

    @classmethod
    async def start(cls, argv: list[str], cwd: Path, env: dict[str, str]) -> PtyTerminal:
        master, slave = pty.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                start_new_session=True, preexec_fn=_take_terminal,
            )  # fmt: skip
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(master, proc)

    async def _ready(self, add: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        getattr(loop, f"add_{add}")(self.master, wake)
        try:
            await done
        finally:
            getattr(loop, f"remove_{add}")(self.master)

    async def read(self) -> bytes:
        while not self._closed:
            try:
                return os.read(self.master, READ_SIZE)
            except BlockingIOError:
                await self._ready("reader")
            except OSError as exc:  # EIO: every holder of the other side is gone
                if exc.errno != errno.EIO:
                    raise
                break
        self.exit_code = await self.proc.wait()
        return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                await self._ready("writer")

    async def resize(self, cols: int, rows: int) -> None:
        if not self._closed:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sig in (signal.SIGHUP, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.exit_code = await asyncio.wait_for(self.proc.wait(), 2.0)
                break
            except TimeoutError:
                continue
        os.close(self.master)
