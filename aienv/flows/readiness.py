"""Whether a launched environment's endpoints answer yet.

An http endpoint answers when an HTTP response comes back to a ``GET`` (a VM's
port forward accepts connections before the guest listens, and many small
servers refuse ``HEAD`` with a 501 in their log); any other endpoint answers
when a TCP connection is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from aienv.runtime.record import EndpointUrl

CONNECT_TIMEOUT = 1.0
ANSWER_TIMEOUT = 2.0


async def answers(endpoint: EndpointUrl, host: str = "127.0.0.1") -> bool:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, endpoint.port), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    try:
        if endpoint.protocol != "http":
            return True
        path = urlsplit(endpoint.url).path or "/"
        writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.read(5), ANSWER_TIMEOUT)) == b"HTTP/"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def all_answer(endpoints: list[EndpointUrl]) -> bool:
    return all([await answers(ep) for ep in endpoints])
