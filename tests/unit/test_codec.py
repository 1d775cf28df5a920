"""The announcement codec: round trips and every way a datagram can be wrong."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from aienv.discovery import codec
from aienv.identity import Identity, node_id_for


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


def test_bad_compression(ident: Identity) -> None:
    assert reason(frame(ident, b"not zstd at all")) == "bad_compression"


def test_decompression_bomb(ident: Identity) -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b" " * (10 * 1024 * 1024))
    assert len(bomb) < 1200
    assert reason(frame(ident, bomb)) == "bad_compression"


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


def test_header_layout_is_as_documented(ident: Identity) -> None:
    data = codec.encode(body(), ident)
    magic, version, kind, length = struct.unpack_from("!4sBBH", data)
    assert (magic, version, kind) == (b"AIEN", 1, 1)
    assert len(data) == 8 + length + 32 + 64
    assert data[8 + length : 8 + length + 32] == ident.public_key


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(codec.decode(data), codec.Invalid)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_fuzz_single_byte_flips_are_rejected(position: int, value: int) -> None:
    ident = Identity.generate()
    data = bytearray(codec.encode(body(), ident))
    position %= len(data)
    if data[position] == value:
        return
    data[position] = value
    assert isinstance(codec.decode(bytes(data)), codec.Invalid)


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
