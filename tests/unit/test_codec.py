"""The announcement codec: round trips and every way a datagram can be wrong.

The ``test_fuzz_*`` properties run under the Hypothesis profile of
``tests/unit/conftest.py``: a derandomized, bounded slice in CI, and many more
random examples with ``scripts/fuzz`` (``AIENV_FUZZ=long``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from collections import Counter
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import event, given
from hypothesis import strategies as st

from aienv.discovery import codec
from aienv.discovery.peers import PeerTable
from aienv.discovery.service import DiscoveryService
from aienv.identity import Identity, node_id_for
from aienv.security.allow import AllowList


@pytest.fixture(scope="module")
def ident() -> Identity:
    return Identity.generate()


def body(n_workspaces: int = 1, **extra: object) -> codec.Body:
    return codec.Body(
        name="alpha",
        instance="0123456789abcdef",
        seq=7,
        http=codec.HttpInfo(port=37778),
        interval=10.0,
        resources={"cpus": 8, "memory": 16 << 30},
        workspaces=[
            codec.SharedWorkspace(
                name=f"ws-{i}",
                version="1.0.0",
                digest=hashlib.sha256(str(i).encode()).hexdigest(),
                size=1000 + i,
                runtimes=["process"],
                tags=["demo"],
            )
            for i in range(n_workspaces)
        ],
        **extra,  # type: ignore[arg-type]
    )


def frame(ident: Identity, raw_body: bytes, *, kind: int = 1, version: int = 1) -> bytes:
    head = codec.HEADER.pack(codec.MAGIC, version, kind, len(raw_body)) + raw_body
    head += ident.public_key
    return head + ident.sign(head)


def test_round_trip(ident: Identity) -> None:
    data = codec.encode(body(), ident)
    assert len(data) <= codec.MAX_DATAGRAM
    ann = codec.decode(data)
    assert isinstance(ann, codec.Announcement)
    assert ann.kind == codec.KIND_ANNOUNCE
    assert ann.node_id == ident.node_id == node_id_for(ident.public_key)
    assert ann.body == body()


def test_goodbye_round_trip(ident: Identity) -> None:
    ann = codec.decode(codec.encode(body(0), ident, kind=codec.KIND_GOODBYE))
    assert isinstance(ann, codec.Announcement) and ann.kind == codec.KIND_GOODBYE


def test_many_workspaces_are_truncated_with_more_flag(ident: Identity) -> None:
    data = codec.encode(body(200), ident)
    assert len(data) <= codec.MAX_DATAGRAM
    ann = codec.decode(data)
    assert isinstance(ann, codec.Announcement)
    assert ann.body.more is True
    assert 0 < len(ann.body.workspaces) < 200
    # over HTTP the same announcement carries the whole list
    full = codec.decode(
        codec.encode(body(200), ident, max_size=codec.MAX_HTTP_ANNOUNCEMENT),
        max_size=codec.MAX_HTTP_ANNOUNCEMENT,
    )
    assert isinstance(full, codec.Announcement) and len(full.body.workspaces) == 200


def reason(data: bytes) -> str:
    result = codec.decode(data)
    assert isinstance(result, codec.Invalid), result
    return result.reason


def test_too_short(ident: Identity) -> None:
    assert reason(b"") == "too_short"
    assert reason(codec.encode(body(), ident)[:50]) == "too_short"


def test_oversized() -> None:
    assert reason(b"\0" * (codec.MAX_DATAGRAM + 1)) == "oversized"


def test_bad_magic(ident: Identity) -> None:
    data = bytearray(codec.encode(body(), ident))
    data[0:4] = b"XXXX"
    assert reason(bytes(data)) == "bad_magic"


def test_bad_version(ident: Identity) -> None:
    raw = zstandard.ZstdCompressor().compress(b"{}")
    assert reason(frame(ident, raw, version=2)) == "bad_version"


def test_bad_kind(ident: Identity) -> None:
    raw = zstandard.ZstdCompressor().compress(b"{}")
    assert reason(frame(ident, raw, kind=9)) == "bad_kind"


def test_bad_length(ident: Identity) -> None:
    data = codec.encode(body(), ident)
    assert reason(data + b"\0") == "bad_length"
    assert reason(data[:-1]) == "bad_length"


def test_unsigned_or_tampered(ident: Identity) -> None:
    data = bytearray(codec.encode(body(), ident))
    data[-1] ^= 0xFF  # signature
    assert reason(bytes(data)) == "bad_signature"
    data = bytearray(codec.encode(body(), ident))
    data[10] ^= 0x01  # body
    assert reason(bytes(data)) == "bad_signature"
    unsigned = codec.encode(body(), ident)[:-64] + bytes(64)
    assert reason(unsigned) == "bad_signature"


def test_signature_by_another_key(ident: Identity) -> None:
    other = Identity.generate()
    data = bytearray(codec.encode(body(), ident))
    # keep the original public key but sign with another key: rejected
    signed_end = len(data) - 64
    data[signed_end:] = other.sign(bytes(data[:signed_end]))
    assert reason(bytes(data)) == "bad_signature"


def test_key_swap_changes_node_id(ident: Identity) -> None:
    other = Identity.generate()
    a = codec.decode(codec.encode(body(), ident))
    b = codec.decode(codec.encode(body(), other))
    assert isinstance(a, codec.Announcement) and isinstance(b, codec.Announcement)
    assert a.node_id != b.node_id


def test_a_known_id_cannot_be_claimed_with_another_key(ident: Identity) -> None:
    """The id is the key's hash, so a datagram claims an id only by carrying its key: with
    another key in its place the signature fails; signed by that other key, it is another
    node's announcement, never an update of the first."""
    other = Identity.generate()
    real = codec.encode(body(), ident)
    signed_at = len(real) - 64
    swapped = real[: signed_at - 32] + other.public_key + real[signed_at:]
    assert reason(swapped) == "bad_signature"
    resigned = swapped[:signed_at] + other.sign(swapped[:signed_at])
    decoded = codec.decode(resigned)
    assert isinstance(decoded, codec.Announcement)
    assert decoded.node_id == node_id_for(other.public_key) != node_id_for(ident.public_key)


def test_bad_compression(ident: Identity) -> None:
    assert reason(frame(ident, b"not zstd at all")) == "bad_compression"


def test_decompression_bomb(ident: Identity) -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b" " * (10 * 1024 * 1024))
    assert len(bomb) < 1200
    assert reason(frame(ident, bomb)) == "bad_compression"
    # the decompression context a thread keeps is left mid-frame by the bomb, and by a
    # frame cut short: the next good datagram decodes all the same
    assert reason(frame(ident, bomb[: len(bomb) // 2])) == "bad_compression"
    good = codec.decode(codec.encode(body(), ident))
    assert isinstance(good, codec.Announcement) and good.body == body()


def test_bad_json(ident: Identity) -> None:
    comp = zstandard.ZstdCompressor()
    assert reason(frame(ident, comp.compress(b"{not json"))) == "bad_json"
    assert reason(frame(ident, comp.compress(b"[1, 2]"))) == "bad_json"
    assert reason(frame(ident, comp.compress(b"\xff\xfe"))) == "bad_json"


@pytest.mark.parametrize(
    "mutation",
    [
        {"name": "Bad Name!"},
        {"instance": "short"},
        {"seq": -1},
        {"http": {"port": 0}},
        {"interval": 0},
        {"workspaces": [{"name": "../x", "version": "1", "digest": "0" * 64, "size": 1}]},
        {"workspaces": [{"name": "x", "version": "1", "digest": "nothex", "size": 1}]},
        {"workspaces": "nope"},
    ],
)
def test_bad_fields(ident: Identity, mutation: dict[str, object]) -> None:
    obj = body().model_dump(mode="json") | mutation
    raw = zstandard.ZstdCompressor().compress(json.dumps(obj).encode())
    assert reason(frame(ident, raw)) == "bad_fields"


def test_unknown_fields_are_ignored_for_forward_compatibility(ident: Identity) -> None:
    obj = body().model_dump(mode="json") | {"future_field": {"x": 1}}
    raw = zstandard.ZstdCompressor().compress(json.dumps(obj).encode())
    assert isinstance(codec.decode(frame(ident, raw)), codec.Announcement)


def test_description_and_needs_travel_and_older_announcements_lack_them(
    ident: Identity,
) -> None:
    needs = codec.Needs(runtime="container", cpus=2.0, memory=4 << 30, gpu=True)
    ws = body().workspaces[0].model_copy(update={"description": "a lab", "needs": needs})
    ann = codec.decode(codec.encode(body().model_copy(update={"workspaces": [ws]}), ident))
    assert isinstance(ann, codec.Announcement)
    assert ann.body.workspaces[0].description == "a lab"
    assert ann.body.workspaces[0].needs == needs
    # an older node's announcement (no description, no needs) still decodes
    obj = body().model_dump(mode="json")
    for w in obj["workspaces"]:
        del w["description"], w["needs"]
    raw = zstandard.ZstdCompressor().compress(json.dumps(obj).encode())
    old = codec.decode(frame(ident, raw))
    assert isinstance(old, codec.Announcement) and old.body.workspaces[0].needs is None
    # a description longer than an announcement carries is a bad field, not a crash
    obj["workspaces"][0]["description"] = "x" * (codec.DESCRIPTION_MAX + 1)
    raw = zstandard.ZstdCompressor().compress(json.dumps(obj).encode())
    assert reason(frame(ident, raw)) == "bad_fields"


def test_a_long_description_is_cut_at_a_word_to_fit_an_announcement() -> None:
    from aienv.flows.workspaces import _short

    text = " ".join(f"word{i}" for i in range(60))  # about 400 characters
    cut = _short(text)
    assert len(cut) <= codec.DESCRIPTION_MAX and cut.endswith("…")
    assert text.startswith(cut[:-1]) and text[len(cut) - 1] == " "  # at a word's end
    assert _short("short enough") == "short enough"


def test_header_layout_is_as_documented(ident: Identity) -> None:
    data = codec.encode(body(), ident)
    magic, version, kind, length = struct.unpack_from("!4sBBH", data)
    assert (magic, version, kind) == (b"AIEN", 1, 1)
    assert len(data) == 8 + length + 32 + 64
    assert data[8 + length : 8 + length + 32] == ident.public_key


def test_deeply_nested_json_is_invalid_not_an_exception(ident: Identity) -> None:
    raw = zstandard.ZstdCompressor().compress(b"[" * 5000)
    assert reason(frame(ident, raw)) == "bad_json"


@pytest.mark.parametrize("mutation", [{"seq": "5"}, {"more": 1}, {"interval": "10"}])
def test_wire_types_are_strict(ident: Identity, mutation: dict[str, object]) -> None:
    obj = body().model_dump(mode="json") | mutation
    raw = zstandard.ZstdCompressor().compress(json.dumps(obj).encode())
    assert reason(frame(ident, raw)) == "bad_fields"


def test_integer_interval_is_a_number(ident: Identity) -> None:
    obj = body().model_dump(mode="json") | {"interval": 10}
    raw = zstandard.ZstdCompressor().compress(json.dumps(obj).encode())
    assert isinstance(codec.decode(frame(ident, raw)), codec.Announcement)


# -- fuzzing ---------------------------------------------------------------------------
#
# Datagrams are drawn from three families: random bytes; frames correctly laid out and
# signed (by a peer or by the receiving node itself) around fuzzed bodies, from valid
# ones to arbitrary JSON, garbage zstd and no zstd at all, with fuzzed kinds and
# versions; and such frames corrupted by a few byte edits.


def fixed_identity(label: str) -> Identity:
    """A key made from ``label``: Ed25519 signs deterministically, so the examples are the
    same bytes on every run (the CI slice is derandomized)."""
    seed = hashlib.sha256(label.encode()).digest()
    return Identity.from_private_key(Ed25519PrivateKey.from_private_bytes(seed))


PEERS = [fixed_identity(f"fuzz-peer-{i}") for i in range(3)]
OWN = fixed_identity("fuzz-own")  # the receiving node's identity in the service property
SIGNED_OUTCOMES = {"bad_version", "bad_kind", "bad_compression", "bad_json", "bad_fields"}

names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True)


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
short_texts = st.lists(st.text(max_size=12), max_size=4)
workspace_dicts = st.fixed_dictionaries(
    {"name": names, "version": st.text(max_size=64), "digest": hexes(64), "size": st.integers(0)},
    optional={
        "runtimes": short_texts,
        "tags": short_texts,
        "languages": short_texts,
        "tools": short_texts,
        "protected": st.booleans(),
    },
)
body_dicts = st.fixed_dictionaries(
    {"name": names, "instance": hexes(16), "seq": st.integers(0, 2**64)},
    optional={
        "http": st.fixed_dictionaries(
            {"port": st.integers(1, 65535)},
            optional={"scheme": st.sampled_from(["http", "https"]), "fingerprint": hexes(64)},
        ),
        "interval": st.floats(0.001, 3600) | st.integers(1, 3600),
        "resources": st.dictionaries(st.text(max_size=10), st.integers(0, 2**40), max_size=16),
        "workspaces": st.lists(workspace_dicts, max_size=4),
        "archives": st.lists(
            st.fixed_dictionaries({"digest": hexes(64)}, optional={"complete": st.booleans()}),
            max_size=3,
        ),
        "more": st.booleans(),
    },
)
FIELDS = ["name", "instance", "seq", "http", "interval", "resources", "workspaces", "archives"]
mutated_bodies = st.builds(
    lambda body, changes: body | changes,
    body_dicts,
    st.dictionaries(st.sampled_from([*FIELDS, "more", "future"]), json_values, max_size=3),
)


def packed(obj: Any, level: int) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(json.dumps(obj).encode())


levels = st.sampled_from([1, 3, 9])  # 9 as the node; high levels only cost time here
payloads = st.one_of(
    st.builds(packed, body_dicts, levels),
    st.builds(packed, mutated_bodies, levels),
    st.builds(packed, json_values, levels),
    st.builds(lambda raw: zstandard.ZstdCompressor().compress(raw), st.binary(max_size=600)),
    st.binary(max_size=600),  # not zstd at all
)
signers = st.sampled_from([*PEERS, OWN])
signed = st.builds(
    lambda ident, raw, kind, version: frame(ident, raw, kind=kind, version=version),
    signers,
    payloads,
    st.sampled_from([1, 1, 1, 2, 0, 3, 255]),  # mostly announce
    st.sampled_from([1, 1, 1, 1, 0, 2]),  # mostly the current version
)


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A signed frame and a copy changed by a few byte edits (and maybe cut)."""
    original = draw(signed)
    data = bytearray(original)
    edits = st.tuples(
        st.sampled_from(["set", "insert", "delete"]), st.integers(0), st.integers(0, 255)
    )
    for op, where, value in draw(st.lists(edits, min_size=1, max_size=4)):
        at = where % (len(data) + 1)
        if op == "insert":
            data.insert(at, value)
        elif at < len(data):
            if op == "set":
                data[at] = value
            else:
                del data[at]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return original, bytes(data)


INSTANCES = ["0123456789abcdef", "fedcba9876543210"]


def announcement(ident: Identity, instance: str, seq: int, kind: int, n: int, more: bool) -> bytes:
    return codec.encode(
        body(n).model_copy(update={"instance": instance, "seq": seq, "more": more}),
        ident,
        kind=kind,
    )


# valid announcements and goodbyes of a few peers and runs: joins, updates, leaves
announcements = st.builds(
    announcement,
    signers,
    st.sampled_from(INSTANCES),
    st.integers(0, 4),
    st.sampled_from([codec.KIND_ANNOUNCE, codec.KIND_ANNOUNCE, codec.KIND_GOODBYE]),
    st.integers(0, 3),
    st.booleans(),
)
datagrams = st.one_of(
    announcements,
    announcements,
    signed,
    corrupted().map(lambda pair: pair[1]),
    st.binary(max_size=1500),
)


@given(st.binary(max_size=2000))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(codec.decode(data), codec.Invalid)


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_fuzz_single_byte_flips_are_rejected(position: int, value: int) -> None:
    data = bytearray(codec.encode(body(), PEERS[0]))
    position %= len(data)
    if data[position] == value:
        return
    data[position] = value
    assert isinstance(codec.decode(bytes(data)), codec.Invalid)


@given(corrupted())
def test_fuzz_any_change_to_a_signed_datagram_is_rejected(pair: tuple[bytes, bytes]) -> None:
    original, data = pair
    for max_size in (codec.MAX_DATAGRAM, codec.MAX_HTTP_ANNOUNCEMENT):
        result = codec.decode(data, max_size=max_size)
        if data != original:
            assert isinstance(result, codec.Invalid), result


@given(signed)
def test_fuzz_signed_bodies_decode_or_are_named(data: bytes) -> None:
    """A well-framed, signed datagram is an announcement or invalid for a body reason, and
    what the decoder accepts the encoder gives back unchanged."""
    result = codec.decode(data, max_size=codec.MAX_HTTP_ANNOUNCEMENT)
    event(result.reason if isinstance(result, codec.Invalid) else "announcement")
    if isinstance(result, codec.Invalid):
        assert result.reason in SIGNED_OUTCOMES, result
        return
    signer = next(i for i in [*PEERS, OWN] if i.public_key == result.public_key)
    assert result.node_id == signer.node_id
    again = codec.decode(
        codec.encode(result.body, signer, kind=result.kind, max_size=codec.MAX_HTTP_ANNOUNCEMENT),
        max_size=codec.MAX_HTTP_ANNOUNCEMENT,
    )
    assert isinstance(again, codec.Announcement)
    assert again.body == result.body and again.kind == result.kind


ADDRESSES = ["10.77.0.5", "10.77.0.6", "192.168.1.20", "fe80::1", "8.8.8.8", "not an address"]
SOURCES = ["multicast", "manual", "dnssd"]


def outcome(counter: str) -> bool:
    """A counter that says what became of a datagram (others, like conflicts, are notes)."""
    return counter in ("received", "accepted", "own", "dropped") or counter.startswith("dropped_")


def expected_count(svc: DiscoveryService, data: bytes, address: str, source: str) -> str:
    """The one counter (besides ``received``) the service must raise for this datagram."""
    if not svc.allowed(address):
        return "dropped_not_allowed"
    limit = codec.MAX_DATAGRAM if source == "multicast" else codec.MAX_HTTP_ANNOUNCEMENT
    result = codec.decode(data, max_size=limit)
    if isinstance(result, codec.Invalid):
        return f"dropped_{result.reason}"
    if result.node_id == OWN.node_id:
        return "own"
    refused = svc.peers.refusal(result.node_id, address)
    if result.kind != codec.KIND_GOODBYE and refused is not None:
        return f"dropped_{refused}"
    return "accepted"


@given(
    st.lists(
        st.tuples(datagrams, st.sampled_from(ADDRESSES), st.sampled_from(SOURCES)),
        min_size=1,
        max_size=12,
    )
)
async def test_fuzz_service_accounts_for_every_datagram(
    items: list[tuple[bytes, str, str]],
) -> None:
    """A live discovery service fed fuzzed datagrams: nothing raises, each datagram raises
    ``received`` and exactly one outcome (``accepted``, ``own`` or ``dropped`` with its
    reason), and the peer table follows the joins and leaves it reported."""
    changes: list[str] = []
    fetched: list[str] = []
    svc = DiscoveryService(
        identity=OWN,
        node_name="receiver",
        http_port=37778,
        group="239.255.77.77",
        port=37777,
        interval=10.0,
        interfaces=[],
        shared=list,
        manual_peers=list,
        on_peer_change=lambda change, node_id, message: changes.append(change),
        dnssd=False,
        allowed=AllowList().allows,
    )
    svc.peers = PeerTable(clock=lambda: 1000.0)  # nothing expires during the example

    async def poll(address: str, source: str = "manual") -> bool:  # no network: record it
        fetched.append(address)
        return False

    svc.poll = poll  # type: ignore[method-assign]
    try:
        for data, address, source in items:
            expected = expected_count(svc, data, address, source)
            event(expected)
            before = Counter(svc.counters)
            svc.handle_datagram(data, address, source)
            raised = Counter({k: n for k, n in (svc.counters - before).items() if outcome(k)})
            extra = {"dropped": 1} if expected.startswith("dropped_") else {}
            assert raised == Counter({"received": 1, expected: 1, **extra}), (expected, raised)
        await asyncio.gather(*svc._polls)
    finally:  # a moved peer was asked over HTTP: the client's session is closed here
        await asyncio.gather(*svc._polls, return_exceptions=True)
        await svc.client.close()
    counts = svc.counters
    assert counts["received"] == len(items)
    assert counts["received"] == counts["accepted"] + counts["own"] + counts["dropped"]
    assert counts["dropped"] == sum(n for k, n in counts.items() if k.startswith("dropped_"))
    joined, left = changes.count("joined"), changes.count("left")
    assert joined - left == len(svc.peers.all())
    assert len(fetched) <= counts["accepted"]
