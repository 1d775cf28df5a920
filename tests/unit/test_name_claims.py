"""A node id is the hash of its key, so an id cannot change hands; a name can. The
discovery service reports a name announced by a second node id, once per id, and
keeps both peers (by id)."""

from __future__ import annotations

from aienv.discovery import codec
from aienv.discovery.service import DiscoveryService
from aienv.identity import Identity


def announcement(ident: Identity, name: str) -> bytes:
    body = codec.Body(name=name, instance="0" * 16, seq=1, http=codec.HttpInfo(port=37778))
    return codec.encode(body, ident)


def test_a_name_claimed_by_a_second_node_is_reported_once() -> None:
    reports: list[tuple[str, str, str]] = []
    svc = DiscoveryService(
        identity=Identity.generate(),
        node_name="self",
        http_port=37778,
        group="239.255.77.77",
        port=37777,
        interval=1.0,
        interfaces=[],
        shared=list,
        manual_peers=list,
        on_peer_change=lambda *change: reports.append(change),
        dnssd=False,
    )
    first, second = Identity.generate(), Identity.generate()
    svc.handle_datagram(announcement(first, "alpha"), "10.0.0.1")
    svc.handle_datagram(announcement(second, "alpha"), "10.0.0.2")
    svc.handle_datagram(announcement(second, "alpha"), "10.0.0.2")  # not again
    svc.handle_datagram(announcement(first, "alpha"), "10.0.0.1")  # the first owner: fine
    conflicts = [r for r in reports if r[0] == "conflict"]
    assert len(conflicts) == 1 and svc.counters["name_conflicts"] == 1
    _, node_id, message = conflicts[0]
    assert node_id == second.node_id
    assert second.node_id[:12] in message and first.node_id[:12] in message
    assert "10.0.0.2" in message
    assert {p.node_id for p in svc.peers.all()} == {first.node_id, second.node_id}
