"""The peer table: joins, updates, stale datagrams, goodbyes, expiry and lookups."""

from __future__ import annotations

import pytest

from aienv.discovery import codec, peers
from aienv.discovery.peers import PeerTable
from aienv.errors import InvalidInput, NotFound
from aienv.identity import Identity


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def announce(
    ident: Identity, name: str, seq: int, instance: str = "a" * 16, **kw: object
) -> codec.Announcement:
    body = codec.Body(
        name=name, instance=instance, seq=seq, interval=10.0, http=codec.HttpInfo(port=37778), **kw
    )  # type: ignore[arg-type]
    ann = codec.decode(codec.encode(body, ident))
    assert isinstance(ann, codec.Announcement)
    return ann


def test_join_update_and_duplicates() -> None:
    clock, table, ident = Clock(), PeerTable(Clock()), Identity.generate()
    table = PeerTable(clock)
    assert table.update(announce(ident, "alpha", 1), "10.0.0.1", "multicast") == "joined"
    assert table.update(announce(ident, "alpha", 1), "10.0.0.1", "multicast") is None  # same seq
    assert table.update(announce(ident, "alpha", 2), "10.0.0.1", "multicast") is None  # no change
    shared = [codec.SharedWorkspace(name="w", version="1", digest="a" * 64, size=1)]
    assert (
        table.update(announce(ident, "alpha", 3, workspaces=shared), "10.0.0.1", "multicast")
        == "updated"
    )
    assert table.update(announce(ident, "alpha", 2), "10.0.0.1", "multicast") is None  # stale
    assert [w.name for w in table.all()[0].workspaces] == ["w"]
    assert table.all()[0].url == "http://10.0.0.1:37778"


def test_expiry_after_three_missed_intervals() -> None:
    clock = Clock()
    table = PeerTable(clock)
    table.update(announce(Identity.generate(), "alpha", 1), "10.0.0.1", "multicast")
    clock.now += 29.9
    assert table.expire() == [] and len(table.all()) == 1
    clock.now += 0.2
    assert [p.name for p in table.expire()] == ["alpha"]
    assert table.all() == []


def test_announcements_keep_a_peer_alive() -> None:
    clock, ident = Clock(), Identity.generate()
    table = PeerTable(clock)
    for seq in range(1, 10):
        table.update(announce(ident, "alpha", seq), "10.0.0.1", "multicast")
        clock.now += 10
        assert table.expire() == []


def test_replayed_datagram_does_not_keep_a_peer_alive() -> None:
    clock, ident = Clock(), Identity.generate()
    table = PeerTable(clock)
    old = announce(ident, "alpha", 1)
    table.update(old, "10.0.0.1", "multicast")
    clock.now += 25
    table.update(old, "10.0.0.1", "multicast")
    clock.now += 6
    assert [p.name for p in table.expire()] == ["alpha"]


def test_goodbye_removes_only_the_same_instance() -> None:
    clock, ident = Clock(), Identity.generate()
    table = PeerTable(clock)
    table.update(announce(ident, "alpha", 5, instance="b" * 16), "10.0.0.1", "multicast")
    assert table.goodbye(announce(ident, "alpha", 1, instance="c" * 16)) is None
    assert table.goodbye(announce(ident, "alpha", 6, instance="b" * 16)) is not None
    assert table.all() == []


def test_restarted_peer_with_new_instance_is_accepted() -> None:
    clock, ident = Clock(), Identity.generate()
    table = PeerTable(clock)
    table.update(announce(ident, "alpha", 50, instance="b" * 16), "10.0.0.1", "multicast")
    assert (
        table.update(announce(ident, "alpha", 1, instance="c" * 16), "10.0.0.1", "multicast")
        == "updated"
    )


def test_resolve_by_name_and_id_prefix() -> None:
    table = PeerTable(Clock())
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    table.update(announce(a, "alpha", 1), "10.0.0.1", "multicast")
    table.update(announce(b, "beta", 1), "10.0.0.2", "multicast")
    table.update(announce(c, "beta", 1), "10.0.0.3", "multicast")
    assert table.resolve("alpha").node_id == a.node_id
    assert table.resolve(b.node_id[:12]).node_id == b.node_id
    with pytest.raises(InvalidInput, match="several peers are named"):
        table.resolve("beta")
    with pytest.raises(NotFound, match="no peer 'gamma'"):
        table.resolve("gamma")


def test_truncated_datagram_does_not_replace_the_full_list() -> None:
    clock, ident = Clock(), Identity.generate()
    table = PeerTable(clock)
    full = [
        codec.SharedWorkspace(name=f"w{i}", version="1", digest=f"{i:064x}", size=1)
        for i in range(5)
    ]
    table.update(announce(ident, "alpha", 1, workspaces=full), "10.0.0.1", "http")
    cut = announce(ident, "alpha", 2, workspaces=full[:2], more=True)
    assert table.update(cut, "10.0.0.1", "multicast") is None
    assert len(table.all()[0].workspaces) == 5
    changed = announce(ident, "alpha", 3, workspaces=[full[4]], more=True)
    assert table.update(changed, "10.0.0.1", "multicast") == "updated"
    assert [w.name for w in table.all()[0].workspaces] == ["w4"]


def test_fresh_keys_from_one_address_are_bounded() -> None:
    """Keys are free to make: 20,000 announcements under fresh keys once filled the table
    for hours. One address brings at most NEW_PER_ADDRESS new ids a minute."""
    clock = Clock()
    table = PeerTable(clock)
    keys = [Identity.generate() for _ in range(peers.NEW_PER_ADDRESS + 3)]
    results = [table.update(announce(k, f"n{i}", 1), "10.0.0.66", "multicast")
               for i, k in enumerate(keys)]  # fmt: skip
    assert results == ["joined"] * peers.NEW_PER_ADDRESS + ["new_ids"] * 3
    assert table.update(announce(keys[0], "n0", 2), "10.0.0.66", "multicast") is None  # known
    assert table.update(announce(keys[-1], "x", 1), "10.0.0.67", "multicast") == "joined"
    clock.now += peers.NEW_WINDOW
    assert table.update(announce(keys[-2], "y", 1), "10.0.0.66", "multicast") == "joined"


def test_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "MAX_PEERS", 3)
    table = PeerTable(Clock())
    results = [
        table.update(announce(Identity.generate(), f"n{i}", 1), f"10.0.0.{i}", "multicast")
        for i in range(5)
    ]
    assert results == ["joined"] * 3 + ["table_full"] * 2 and len(table.all()) == 3


def test_a_forged_long_interval_does_not_keep_a_peer_for_hours() -> None:
    clock = Clock()
    table = PeerTable(clock)
    body = codec.Body(name="ghost", instance="b" * 16, seq=1, interval=3600.0)
    ann = codec.decode(codec.encode(body, Identity.generate()))
    assert isinstance(ann, codec.Announcement)
    assert table.update(ann, "10.0.0.5", "multicast") == "joined"
    clock.now += peers.MISSED_INTERVALS * peers.MAX_INTERVAL + 1
    assert [p.name for p in table.expire()] == ["ghost"]


def test_a_datagram_from_another_address_moves_a_tls_peer_only_once_proved() -> None:
    table = PeerTable(Clock())
    ident = Identity.generate()
    http = codec.HttpInfo(port=37778, scheme="https", fingerprint="ab" * 32)
    body = codec.Body(name="alpha", instance="a" * 16, seq=1, http=http)
    first = codec.decode(codec.encode(body, ident))
    again = codec.decode(codec.encode(body.model_copy(update={"seq": 2}), ident))
    assert isinstance(first, codec.Announcement) and isinstance(again, codec.Announcement)
    assert table.update(first, "10.0.0.1", "multicast") == "joined"
    table.update(again, "10.0.0.66", "multicast")  # relayed by another machine
    (peer,) = table.all()
    assert peer.address == "10.0.0.1" and peer.proposed == "10.0.0.66"
    table.refuse_move(ident.node_id, "10.0.0.66")
    assert table.all()[0].proposed is None and table.all()[0].address == "10.0.0.1"
    table.confirm_move(ident.node_id, "10.0.0.2")  # a new address that proved it
    assert table.all()[0].address == "10.0.0.2"


async def test_peers_that_multicast_reaches_are_not_polled_over_http_too() -> None:
    """DNS-SD and manual peers are polled only while multicast does not bring them: a LAN
    of N nodes where multicast works makes no N(N-1) polls an interval (issue 21)."""
    from aienv.discovery.service import DiscoveryService

    clock = Clock()
    svc = DiscoveryService(
        identity=Identity.generate(), node_name="me", http_port=37778, group="239.255.77.77",
        port=37777, interval=10.0, interfaces=[], shared=list,
        manual_peers=lambda: ["10.0.0.3", "10.0.0.9:37778"],
        on_peer_change=lambda *_: None, dnssd=False,
    )  # fmt: skip
    svc.peers = PeerTable(clock)
    svc._dnssd_peers = {"a": "10.0.0.1:37778", "b": "10.0.0.2:37778"}
    polled: list[str] = []

    async def poll(address: str, source: str = "manual") -> bool:
        polled.append(address)
        return True

    svc.poll = poll  # type: ignore[method-assign]
    heard, http_only, manual = Identity.generate(), Identity.generate(), Identity.generate()
    svc.peers.update(announce(heard, "heard", 1), "10.0.0.1", "multicast")
    svc.peers.update(announce(http_only, "polled", 1), "10.0.0.2", "dnssd")
    svc.peers.update(announce(manual, "manual", 1), "10.0.0.3", "multicast")
    await svc.poll_due()
    assert sorted(polled) == ["10.0.0.2:37778", "10.0.0.9:37778"]
    assert svc.counters["polls_skipped"] == 2
    clock.now += 16  # multicast went quiet for more than 1.5 intervals: polled again
    polled.clear()
    await svc.poll_due()
    assert sorted(polled) == ["10.0.0.1:37778", "10.0.0.2:37778", "10.0.0.3", "10.0.0.9:37778"]
