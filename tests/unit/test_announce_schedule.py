"""When the discovery service announces: a burst on start and on change, one
datagram per interval otherwise, and a change mid-burst goes out at once."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

from aienv.discovery.service import DiscoveryService
from aienv.identity import Identity


def service(interval: float) -> tuple[DiscoveryService, list[float]]:
    svc = DiscoveryService(
        identity=Identity.generate(),
        node_name="alpha",
        http_port=37778,
        group="239.255.77.77",
        port=37777,
        interval=interval,
        interfaces=[],
        shared=list,
        manual_peers=list,
        on_peer_change=lambda *_: None,
        dnssd=False,
    )
    sent: list[float] = []
    start = time.monotonic()
    svc._send = lambda kind: sent.append(time.monotonic() - start)  # type: ignore[method-assign]
    return svc, sent


async def test_burst_then_one_per_interval() -> None:
    svc, sent = service(interval=0.4)
    task = asyncio.create_task(svc._announce_loop())
    await asyncio.sleep(0.65 + 0.4 * 2 + 0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    burst, periodic = sent[:3], sent[3:]
    assert burst[0] < 0.05 and 0.1 < burst[1] < 0.3 and 0.55 < burst[2] < 0.8
    assert 1 <= len(periodic) <= 3
    gaps = [b - a for a, b in pairwise(sent[2:])]
    assert all(g > 0.35 for g in gaps)  # single datagrams, not bursts


async def test_change_mid_burst_is_sent_at_once() -> None:
    svc, sent = service(interval=10)
    task = asyncio.create_task(svc._announce_loop())
    await asyncio.sleep(0.3)  # inside the start burst, before its last datagram
    before = len(sent)
    svc.announce_now()
    await asyncio.sleep(0.05)  # the burst's next datagram would only be due at 0.65 s
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(sent) == before + 1
