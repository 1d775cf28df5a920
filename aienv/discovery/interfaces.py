"""Choosing the IPv4 interfaces the node announces on."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import psutil

from aienv.errors import InvalidInput


@dataclass(slots=True, frozen=True)
class Interface:
    name: str
    address: str


def _ipv4_by_interface() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, addrs in psutil.net_if_addrs().items():
        for addr in addrs:
            if addr.family == socket.AF_INET:
                out.setdefault(name, []).append(addr.address)
    return out


def select_interfaces(wanted: list[str]) -> list[Interface]:
    """Resolve names or addresses; with none given, every up, non-loopback IPv4 interface."""
    stats = psutil.net_if_stats()
    by_name = _ipv4_by_interface()
    if not wanted:
        return [
            Interface(name, addr)
            for name, addrs in sorted(by_name.items())
            if name in stats and stats[name].isup
            for addr in addrs[:1]
            if not ipaddress.ip_address(addr).is_loopback
        ]
    chosen: list[Interface] = []
    for item in wanted:
        if item in by_name:
            chosen.append(Interface(item, by_name[item][0]))
            continue
        owners = [n for n, addrs in by_name.items() if item in addrs]
        if not owners:
            known = ", ".join(f"{n} ({', '.join(a)})" for n, a in sorted(by_name.items())) or "none"
            raise InvalidInput(f"no IPv4 interface {item!r} here (interfaces: {known})")
        chosen.append(Interface(owners[0], item))
    return list(dict.fromkeys(chosen))
