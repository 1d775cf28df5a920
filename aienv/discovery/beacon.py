"""UDP multicast sockets: one receiver joined on every chosen interface, one sender per interface.

Sent datagrams carry TTL 1 so they never leave the link. The receiver hands
every datagram, with its source address, to a callback; it never decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

from aienv.discovery.interfaces import Interface

log = logging.getLogger(__name__)

IP_MULTICAST_ALL = 49  # Linux: deliver only groups joined on this socket


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, str], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.on_datagram(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery receive error: %s", exc)


class Beacon:
    def __init__(self, group: str, port: int, interfaces: list[Interface]) -> None:
        self.group = group
        self.port = port
        self.interfaces = interfaces
        self._receiver: asyncio.DatagramTransport | None = None
        self._senders: list[tuple[Interface, socket.socket]] = []

    def _receive_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):  # not Linux: the option does not exist
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.bind(("", self.port))
        for iface in self.interfaces:
            mreq = struct.pack(
                "4s4s", socket.inet_aton(self.group), socket.inet_aton(iface.address)
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        return sock

    def _send_socket(self, iface: Interface) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface.address))
        sock.bind((iface.address, 0))
        sock.setblocking(False)
        return sock

    async def start(self, on_datagram: Callable[[bytes, str], None]) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(on_datagram), sock=self._receive_socket()
        )
        self._receiver = transport
        self._senders = [(iface, self._send_socket(iface)) for iface in self.interfaces]

    def send(self, datagram: bytes) -> int:
        """Send on every interface; return how many sends succeeded."""
        sent = 0
        for iface, sock in self._senders:
            try:
                sock.sendto(datagram, (self.group, self.port))
                sent += 1
            except OSError as exc:  # interface went down, no route: try again next interval
                log.debug("discovery send on %s failed: %s", iface.name, exc)
        return sent

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        for _, sock in self._senders:
            sock.close()
        self._senders = []
