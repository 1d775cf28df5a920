"""What a hostile LAN can make the discovery service do, bounded: datagrams under fresh
keys, with forged source addresses and ``more: true``, neither fill the peer table nor
make the node open connections at will; an announcement fetched over HTTP is held to
the HTTP limit, not the datagram's."""

from __future__ import annotations

import asyncio
import os

from aienv.discovery import codec
from aienv.discovery.peers import NEW_PER_ADDRESS
from aienv.discovery.service import MAX_FETCHES, DiscoveryService
from aienv.identity import Identity


def service() -> tuple[DiscoveryService, list[str], asyncio.Event]:
    svc = DiscoveryService(
        identity=Identity.generate(),
        node_name="victim",
        http_port=37778,
        group="239.255.77.77",
        port=37777,
        interval=10.0,
        interfaces=[],
        shared=list,
        manual_peers=list,
        on_peer_change=lambda *_: None,
        dnssd=False,
    )
    asked: list[str] = []
    release = asyncio.Event()

    async def poll(address: str, source: str = "manual") -> bool:  # a connection, recorded
        asked.append(address)
        await release.wait()
        return False

    svc.poll = poll  # type: ignore[method-assign]
    return svc, asked, release


def more(name: str, port: int = 22) -> bytes:
    body = codec.Body(name=name, instance="c" * 16, seq=1, http=codec.HttpInfo(port=port),
                      more=True)  # fmt: skip
    return codec.encode(body, Identity.generate())


async def test_fresh_keys_from_one_forged_address_open_few_connections() -> None:
    svc, asked, release = service()
    for i in range(200):
        svc.handle_datagram(more(f"n{i}"), "10.0.0.50")
    await asyncio.sleep(0)
    assert len(svc.peers.all()) == NEW_PER_ADDRESS
    assert svc.counters["dropped_new_ids"] == 200 - NEW_PER_ADDRESS
    assert len(asked) == min(NEW_PER_ADDRESS, MAX_FETCHES)  # and only to the port announced
    assert set(asked) == {"10.0.0.50:22"}
    release.set()
    await asyncio.gather(*svc._polls)


async def test_many_forged_addresses_never_open_more_than_a_few_at_once() -> None:
    svc, asked, release = service()
    for i in range(100):
        svc.handle_datagram(more(f"n{i}"), f"10.0.{i // 250}.{i % 250 + 1}")
    await asyncio.sleep(0)
    assert len(asked) == MAX_FETCHES and svc.counters["full_list_deferred"] == 100 - MAX_FETCHES
    release.set()
    await asyncio.gather(*svc._polls)


def test_a_full_list_fetched_over_http_is_not_held_to_the_datagram_limit() -> None:
    svc, _, _ = service()
    shared = [
        codec.SharedWorkspace(
            name=f"ws{i:02d}", version="1.0.0", digest=os.urandom(32).hex(), size=i
        )
        for i in range(40)
    ]
    body = codec.Body(name="big", instance="d" * 16, seq=1, http=codec.HttpInfo(port=37778),
                      workspaces=shared)  # fmt: skip
    full = codec.encode(body, Identity.generate(), max_size=codec.MAX_HTTP_ANNOUNCEMENT)
    assert len(full) > codec.MAX_DATAGRAM
    svc.handle_datagram(full, "10.0.0.7", "multicast", over_http=True)  # a full-list fetch
    (peer,) = svc.peers.all()
    assert len(peer.workspaces) == 40 and not peer.body.more


async def test_a_cut_of_lists_already_held_whole_is_not_fetched_again() -> None:
    """500 workspaces once cost every peer a 500 KB fetch per announcement: a datagram
    names its full lists by a signed tag, and a peer holding those asks for nothing."""
    svc, asked, release = service()
    release.set()
    ident = Identity.generate()
    shared = [
        codec.SharedWorkspace(name=f"ws{i:02d}", version="1", digest=os.urandom(32).hex(), size=i)
        for i in range(40)
    ]
    body = codec.Body(name="big", instance="d" * 16, seq=1, http=codec.HttpInfo(port=37778),
                      workspaces=shared)  # fmt: skip
    body = body.model_copy(update={"lists": codec.lists_tag(body)})  # as a node's carry it
    full = codec.encode(body, ident, max_size=codec.MAX_HTTP_ANNOUNCEMENT)
    svc.handle_datagram(full, "10.0.0.7", "multicast", over_http=True)
    cut = codec.encode(body.model_copy(update={"seq": 2}), ident)
    decoded = codec.decode(cut)
    assert isinstance(decoded, codec.Announcement) and decoded.body.more
    svc.handle_datagram(cut, "10.0.0.7")
    await asyncio.sleep(0)
    assert asked == [] and svc.counters["full_list_held"] == 1
    assert len(svc.peers.all()[0].workspaces) == 40  # the cut did not replace the whole
    # one workspace more, past the cut: another tag, so the lists are fetched again
    extra = codec.SharedWorkspace(name="ws99", version="1", digest="e" * 64, size=1)
    grown = body.model_copy(update={"seq": 3, "workspaces": [*shared, extra]})
    grown = grown.model_copy(update={"lists": codec.lists_tag(grown)})
    svc.handle_datagram(codec.encode(grown, ident), "10.0.0.7")
    await asyncio.sleep(0)
    assert asked == ["10.0.0.7:37778"]
    await asyncio.gather(*svc._polls)
