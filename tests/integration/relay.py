"""A LAN machine relaying another node, for tests: it fetches the node's freshly signed
announcement and sends it to a victim's announcement port from its own address, again
(fetched afresh) twice a second until stopped; with ``--proxy``, once, and then it
passes every TCP connection to its port 37778 through to the node, writing down each
byte that crosses it.

relay.py NODE_URL VICTIM_IP LOG [--proxy NODE_IP]

Prints "ready" once its datagrams are out and (with --proxy) it listens.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import httpx

NODE_URL, VICTIM, LOG = sys.argv[1], sys.argv[2], Path(sys.argv[3])
TARGET = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--proxy" else None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            with LOG.open("ab") as log:  # noqa: ASYNC230 (a test stub: what crossed)
                log.write(data)
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert TARGET is not None
    up_reader, up_writer = await asyncio.open_connection(TARGET, 37778)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def fresh() -> bytes:
    """The node's announcement, signed for this request (a newer ``seq``)."""
    return httpx.get(f"{NODE_URL}/api/v1/node/announcement").content


async def send(announcement: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(3):
            sock.sendto(announcement, (VICTIM, 37777))
            await asyncio.sleep(0.1)


async def main() -> None:
    server = await asyncio.start_server(relay, "0.0.0.0", 37778) if TARGET else None
    await send(fresh())
    print("ready", flush=True)
    if server is not None:
        async with server:
            await server.serve_forever()
    else:
        # the node's own datagrams carry newer seqs: one that reaches the victim first
        # makes a relayed one stale, and it is dropped unread. Relayed afresh, twice a
        # second, until stopped
        while True:
            await asyncio.sleep(0.5)
            await send(await asyncio.to_thread(fresh))


LOG.write_bytes(b"")
asyncio.run(main())
