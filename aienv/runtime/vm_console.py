"""A VM's first serial port as a terminal (the page's terminal, ``aienv shell``).

libvirt hands out a domain's console as a stream (``virDomainOpenConsole``). Its
data reaches this process only through a libvirt event loop, which ``vm_libvirt``
runs on a daemon thread; the stream is non-blocking, its "readable" callback (on
that thread) wakes the reader on the node's event loop, and every call on the
stream is one thread hop. Opening takes the console over from any earlier session
(a reloaded page), as ``virsh console --force`` does.

A serial line has no window size: ``resize`` does nothing, and full-screen
programs in the guest see the size its ``stty`` says. What the guest runs on the
console (a login prompt, a shell) is the workspace's choice; what it prints is
also appended to the environment's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aienv.runtime.libvirt_binding import libvirt
from aienv.runtime.terminal import READ_SIZE, Terminal
from aienv.runtime.vm_libvirt import Libvirt


def _wake_on() -> int:
    """A stream's events that may end a wait for data."""
    return int(
        libvirt.VIR_STREAM_EVENT_READABLE
        | libvirt.VIR_STREAM_EVENT_ERROR
        | libvirt.VIR_STREAM_EVENT_HANGUP
    )


#: how long a reader waits for a wake-up before it looks again anyway
_LOOK_AGAIN = 1.0


def open_console(lv: Libvirt, handle: dict[str, Any]) -> Any:
    """A non-blocking stream on the first serial port of the VM ``handle`` names (blocks)."""
    with lv.mapped(f"open the console of the VM {handle['domain']}", handle["uri"]):
        stream = lv.conn(handle["uri"]).newStream(libvirt.VIR_STREAM_NONBLOCK)
        lv.domain(handle).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    return stream


class ConsoleTerminal(Terminal):
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._loop = asyncio.get_running_loop()
        self._readable = asyncio.Event()
        self._closed = False
        stream.eventAddCallback(_wake_on(), self._wake, None)

    def _wake(self, _stream: Any, _events: int, _opaque: Any) -> None:  # libvirt's thread
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._readable.set)

    def _recv(self) -> bytes | None:
        """What the stream holds now; ``None`` when nothing yet, ``b""`` at its end."""
        try:
            data = self.stream.recv(READ_SIZE)
        except libvirt.libvirtError:
            return b""  # the VM stopped, or another session took the console
        return None if data == -2 else bytes(data)

    async def read(self) -> bytes:
        while not self._closed:
            self._readable.clear()
            data = await asyncio.to_thread(self._recv)
            if data is not None:
                return data
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._readable.wait(), _LOOK_AGAIN)
        return b""

    def _send(self, data: bytes) -> None:
        while data:
            sent = self.stream.send(data)
            if sent == -2:  # the line is busy: it drains at the guest's pace
                time.sleep(0.01)
                continue
            data = data[sent:]

    async def write(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            await asyncio.to_thread(self._send, data)
        except libvirt.libvirtError:
            await self.close()

    async def resize(self, cols: int, rows: int) -> None:
        """A serial line has no window size."""

    def _end(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            self.stream.abort()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readable.set()
        await asyncio.to_thread(self._end)
