"""Who owns the other end of a loopback TCP connection, and whether that is the
node's local admin.

Both ends of a loopback connection live in the node's network namespace, so the
client's socket is in ``/proc/net/tcp`` (or ``tcp6``) with its owner's uid, as
``SO_PEERCRED`` would give for a Unix socket. The local admin is the node's own
user, root, and the members of the group ``admin_group`` (``aienv``; install.sh
creates it and adds the user who ran it), never the sandbox's account: another
user of the machine, or a sandboxed environment sharing the host's network,
reaches 127.0.0.1 as a peer.
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
import socket
import struct
from dataclasses import dataclass

TABLES = {socket.AF_INET: "/proc/net/tcp", socket.AF_INET6: "/proc/net/tcp6"}


def _hex_address(address: str, port: int) -> str:
    """``address:port`` as the kernel's table writes it (each 32-bit word in host order)."""
    packed = ipaddress.ip_address(address).packed
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _unmapped(end: tuple[str, int]) -> tuple[str, int]:
    """An IPv4 address seen through a dual-stack socket (``::ffff:127.0.0.1``) as IPv4:
    the client's own socket is an IPv4 one."""
    address = ipaddress.ip_address(end[0].split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (str(mapped), end[1]) if mapped is not None else (str(address), end[1])


def socket_owner(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid that owns the client's end of a connection from ``client`` to ``server``
    on this machine, or None when it cannot be found."""
    client, server = _unmapped(client), _unmapped(server)
    family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
    local, remote = _hex_address(*client), _hex_address(*server)
    try:
        with open(TABLES[family]) as table:
            next(table)  # the header
            for line in table:
                fields = line.split()
                if fields[1] == local and fields[2] == remote:
                    return int(fields[7])
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return None


@dataclass(frozen=True, slots=True)
class LocalAdmins:
    """Which owners of a loopback connection are the node's admin."""

    node_uid: int
    group: str
    sandbox_user: str

    def admits(self, uid: int | None) -> bool:
        if uid is None or uid == _uid_of(self.sandbox_user):
            return False
        return uid in (0, self.node_uid) or _in_group(uid, self.group)


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _in_group(uid: int, group: str) -> bool:
    """``uid``'s primary group is ``group``, or it is listed among its members."""
    try:
        account, members = pwd.getpwuid(uid), grp.getgrnam(group)
    except KeyError:
        return False
    return account.pw_gid == members.gr_gid or account.pw_name in members.gr_mem
