"""LAN-only: which source addresses the node talks to.

By default loopback, the private ranges (RFC 1918, fc00::/7, 100.64.0.0/10
shared address space) and link-local; ``AIENV_ALLOW`` replaces that with a
list of networks (loopback always stays: the CLI uses it). Requests from
elsewhere are refused, and announcements from elsewhere ignored.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = ("127.0.0.0/8", "::1/128")
LAN = (
    *LOOPBACK,
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)


def is_loopback(host: str | None) -> bool:
    """Whether a host name or address (``localhost``, ``127.x``, ``::1``, ``[::1]``) is
    this machine's loopback."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_networks(items: list[str]) -> list[Network]:
    """Networks from strings like ``10.0.0.0/8`` or ``192.168.1.7``; ValueError names a bad one."""
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an address or network (e.g. 10.0.0.0/8)") from exc
    return out


KNOWN = 1024  # addresses whose answer an allow-list keeps (a LAN's peers and clients)


class AllowList:
    def __init__(self, networks: list[str] | None = None) -> None:
        self.networks = parse_networks([*LOOPBACK, *networks] if networks else list(LAN))
        # each announcement and request asks about its source, and a LAN has few: an
        # answer kept saves parsing the address again (emptied when full)
        self._known: dict[str, bool] = {}

    def allows(self, address: str | None) -> bool:
        if not address:
            return False
        known = self._known.get(address)
        if known is None:
            if len(self._known) >= KNOWN:
                self._known.clear()
            known = self._known[address] = self._allows(address)
        return known

    def _allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks if net.version == ip.version)
