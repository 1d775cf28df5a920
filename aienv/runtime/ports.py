"""Endpoint ports: the declared port when it is free here (and one the environment may
bind), else a free ephemeral one."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path


def port_variable(endpoint: str) -> str:
    """The variable that tells an environment an endpoint's port: ``AIENV_PORT_<NAME>``."""
    return f"AIENV_PORT_{endpoint.upper().replace('-', '_')}"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def unprivileged_start() -> int:
    """The lowest port an account without privileges may bind here (1024 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def allocate(wanted: Iterable[tuple[str, int]], taken: set[int], lowest: int = 0) -> dict[str, int]:
    """Map each endpoint name to a local port, avoiding ``taken`` (ports of other
    environments) and, below ``lowest``, ports the environment could not bind (a sandboxed
    process or a VM's qemu runs without privileges: its port 80 is published elsewhere)."""
    out: dict[str, int] = {}
    for name, preferred in wanted:
        port = preferred
        while port < lowest or port in taken or port in out.values() or not port_is_free(port):
            port = free_port()
        out[name] = port
    return out
