"""A shell in a running container: ``docker exec`` with a TTY, its stream on the
engine's socket (read and written from the event loop, never blocking it)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from aienv.dockerengine import Engine
from aienv.runtime.terminal import READ_SIZE, Terminal

#: bash where the image has it, else sh
SHELL = ["/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh"]


class ExecTerminal(Terminal):
    def __init__(self, engine: Engine, exec_id: str, stream: Any) -> None:
        self.engine = engine
        self.exec_id = exec_id
        self.stream = stream  # the SDK's SocketIO: closed with the socket it wraps
        self.sock: socket.socket = getattr(stream, "_sock", stream)
        self.sock.setblocking(False)
        self._closed = False

    @classmethod
    async def start(cls, engine: Engine, container: str, env: dict[str, str]) -> ExecTerminal:
        def create(client: Any) -> tuple[str, Any]:
            made = client.api.exec_create(
                container, SHELL, stdin=True, tty=True,
                environment={**env, "TERM": "xterm-256color"},
            )  # fmt: skip
            return made["Id"], client.api.exec_start(made["Id"], tty=True, socket=True)

        exec_id, stream = await engine.call(f"open a shell in container {container[:12]}", create)
        return cls(engine, exec_id, stream)

    async def read(self) -> bytes:
        if not self._closed:
            with contextlib.suppress(OSError):
                data = await asyncio.get_running_loop().sock_recv(self.sock, READ_SIZE)
                if data:
                    return data
        await self._settle()
        return b""

    async def write(self, data: bytes) -> None:
        if not self._closed:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def resize(self, cols: int, rows: int) -> None:
        if not self._closed:
            await self.engine.call(
                "resize a container's shell",
                lambda c: c.api.exec_resize(self.exec_id, height=rows, width=cols),
            )

    async def _settle(self) -> None:
        with contextlib.suppress(Exception):  # gone with its container: no code to read
            found = await self.engine.call(
                "read a container shell's exit", lambda c: c.api.exec_inspect(self.exec_id)
            )
            self.exit_code = found.get("ExitCode")

    async def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(OSError):  # end of input: the shell ends (Ctrl-D, then EOF)
            await asyncio.get_running_loop().sock_sendall(self.sock, b"\x04")
            self.sock.shutdown(socket.SHUT_WR)
        self._closed = True
        self.sock.close()
        with contextlib.suppress(OSError):
            self.stream.close()
        await self._settle()
