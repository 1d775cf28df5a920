"""Endpoint ports: the declared port when it is free here, else a free ephemeral one."""

from __future__ import annotations

import socket
from collections.abc import Iterable


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


def allocate(wanted: Iterable[tuple[str, int]], taken: set[int]) -> dict[str, int]:
    """Map each endpoint name to a local port, avoiding ``taken`` (ports of other environments)."""
    out: dict[str, int] = {}
    for name, preferred in wanted:
        port = preferred
        while port in taken or port in out.values() or not port_is_free(port):
            port = free_port()
        out[name] = port
    return out
