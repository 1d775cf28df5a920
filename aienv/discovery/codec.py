"""The announcement wire format (see docs/protocol.md), pure functions only.

    offset  size  field
    0       4     magic b"AIEN"
    4       1     protocol version (1)
    5       1     kind (1 announce, 2 goodbye)
    6       2     body length N, big-endian
    8       N     body: one zstd frame holding a UTF-8 JSON object
    8+N     32    Ed25519 public key of the sender (raw)
    40+N    64    Ed25519 signature over bytes [0, 40+N)

The node id is the hex of the first 16 bytes of SHA-256(public key), so the
signature proves the datagram comes from the holder of that id's key.
``decode`` never raises: a bad datagram is returned as ``Invalid(reason)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
from dataclasses import dataclass, field
from typing import Literal

import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aienv.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, node_id_for, verify
from aienv.names import NAME_RE

MAGIC = b"AIEN"
VERSION = 1
KIND_ANNOUNCE = 1
KIND_GOODBYE = 2
HEADER = struct.Struct("!4sBBH")
TRAILER_SIZE = PUBLIC_KEY_SIZE + SIGNATURE_SIZE
OVERHEAD = HEADER.size + TRAILER_SIZE
MAX_DATAGRAM = 1400
MAX_HTTP_ANNOUNCEMENT = 256 * 1024
MAX_BODY_RATIO = 64  # a body may not decompress to more than this many times the datagram

InvalidReason = Literal[
    "too_short",
    "oversized",
    "bad_magic",
    "bad_version",
    "bad_kind",
    "bad_length",
    "bad_signature",
    "bad_compression",
    "bad_json",
    "bad_fields",
]


# a decompression context per thread, kept: making one costs ~8 times the
# decompression of a datagram, and a node decodes one per peer every interval
_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "zstd"):
        _local.zstd = zstandard.ZstdDecompressor()
    kept: zstandard.ZstdDecompressor = _local.zstd
    return kept


#: how much of a workspace's description its announcement carries
DESCRIPTION_MAX = 200


class _Wire(BaseModel):
    # Unknown keys are ignored so that a newer node's additions do not make
    # older nodes drop its announcements (same protocol version).
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Needs(_Wire):
    """What a shared workspace's first environment (the one a clone launches) requires:
    enough for a page to weigh it against a machine before it asks for a plan."""

    runtime: str = Field(max_length=32)
    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: int | None = Field(default=None, ge=0)
    gpu: bool = False  # a GPU is required


class Lineage(_Wire):
    """Where a shared workspace came from when the node cloned it: its origin's node id
    and name, the workspace there, and the version it started from (a fork, or a copy
    when ``digest`` is still the one it shares)."""

    node: str = Field(pattern=r"^[0-9a-f]{32}$")
    peer: str = Field(pattern=NAME_RE.pattern)
    workspace: str = Field(pattern=NAME_RE.pattern)
    revision: int = Field(default=0, ge=0)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class SharedWorkspace(_Wire):
    name: str = Field(pattern=NAME_RE.pattern)  # the one naming rule
    version: str = Field(max_length=64)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    runtimes: list[str] = Field(default_factory=list, max_length=8)
    tags: list[str] = Field(default_factory=list, max_length=32)
    languages: list[str] = Field(default_factory=list, max_length=32)
    tools: list[str] = Field(default_factory=list, max_length=32)
    protected: bool = False  # a password guards its details and archive
    description: str = Field(default="", max_length=DESCRIPTION_MAX)
    needs: Needs | None = None  # absent: files only, or an older node
    revision: int = Field(default=0, ge=0)  # the origin's version number; 0: unknown
    fork_of: Lineage | None = None  # a clone shared again: where it came from
    # the root of the archive's piece list (``archive.pieces``): signed, so a list that
    # matches it verifies each piece as it lands; absent from older nodes
    pieces: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # the bytes its files take once extracted (what a clone checks the disk for);
    # absent from older nodes, whose clones ask for the workspace's details instead
    unpacked: int | None = Field(default=None, ge=0)


class HeldArchive(_Wire):
    """An archive the node serves beyond its shared workspaces (kept or being cloned)."""

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    complete: bool = True


class HttpInfo(_Wire):
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    # sha256 of the TLS certificate (DER), hex: what clients pin when scheme is https
    fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _pinned(self) -> HttpInfo:
        if self.scheme == "https" and self.fingerprint is None:
            raise ValueError("https without a certificate fingerprint cannot be pinned")
        return self


class Body(_Wire):
    name: str = Field(pattern=NAME_RE.pattern)  # the one naming rule
    instance: str = Field(pattern=r"^[0-9a-f]{16}$")
    seq: int = Field(ge=0)
    http: HttpInfo | None = None
    interval: float = Field(default=10.0, gt=0, le=3600)
    resources: dict[str, int] = Field(default_factory=dict, max_length=16)
    workspaces: list[SharedWorkspace] = Field(default_factory=list)
    archives: list[HeldArchive] = Field(default_factory=list)
    more: bool = False
    # a tag of the full lists (``lists_tag``): a receiver that holds the lists with this
    # tag does not fetch them again when a datagram carries only a cut of them
    lists: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")


@dataclass(slots=True, frozen=True)
class Announcement:
    kind: int
    node_id: str
    public_key: bytes
    body: Body


@dataclass(slots=True, frozen=True)
class Invalid:
    reason: InvalidReason
    detail: str = field(default="")


def _frame(kind: int, body: bytes, identity: Identity) -> bytes:
    head = HEADER.pack(MAGIC, VERSION, kind, len(body)) + body + identity.public_key
    return head + identity.sign(head)


def encode(
    body: Body, identity: Identity, *, kind: int = KIND_ANNOUNCE, max_size: int = MAX_DATAGRAM
) -> bytes:
    """Sign and encode ``body``, dropping list items (setting ``more``) to fit ``max_size``.

    Held archives go first (a peer that needs them fetches the full list over
    HTTP), then trailing workspaces.
    """
    compressor = zstandard.ZstdCompressor(level=9)
    current = body
    while True:
        raw = json.dumps(current.model_dump(mode="json"), separators=(",", ":")).encode()
        packed = compressor.compress(raw)
        if OVERHEAD + len(packed) <= max_size and len(packed) <= 0xFFFF:
            return _frame(kind, packed, identity)
        if current.archives:
            keep = len(current.archives) - max(1, len(current.archives) // 4)
            current = current.model_copy(update={"archives": current.archives[:keep], "more": True})
            continue
        if not current.workspaces:
            raise ValueError("announcement does not fit even without workspaces")
        keep = len(current.workspaces) - max(1, len(current.workspaces) // 8)
        current = current.model_copy(update={"workspaces": current.workspaces[:keep], "more": True})


def tagged(body: Body) -> Body:
    """``body`` with its lists' tag, when it has lists a datagram may cut."""
    if not (body.workspaces or body.archives):
        return body
    return body.model_copy(update={"lists": lists_tag(body)})


def lists_tag(body: Body) -> str:
    """16 hex digits naming ``body``'s full lists of workspaces and archives."""
    lists = {
        "workspaces": [w.model_dump(mode="json") for w in body.workspaces],
        "archives": [a.model_dump(mode="json") for a in body.archives],
    }
    return hashlib.sha256(json.dumps(lists, separators=(",", ":")).encode()).hexdigest()[:16]


def decode(data: bytes, *, max_size: int = MAX_DATAGRAM) -> Announcement | Invalid:
    """Decode and verify one datagram; never raises."""
    if len(data) > max_size:
        return Invalid("oversized", f"{len(data)} bytes")
    if len(data) < OVERHEAD:
        return Invalid("too_short", f"{len(data)} bytes")
    magic, version, kind, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        return Invalid("bad_magic")
    if version != VERSION:
        return Invalid("bad_version", str(version))
    if kind not in (KIND_ANNOUNCE, KIND_GOODBYE):
        return Invalid("bad_kind", str(kind))
    if HEADER.size + length + TRAILER_SIZE != len(data):
        return Invalid("bad_length")
    signed_end = HEADER.size + length + PUBLIC_KEY_SIZE
    public_key = data[HEADER.size + length : signed_end]
    if not verify(public_key, data[signed_end:], data[:signed_end]):
        return Invalid("bad_signature")
    limit = MAX_BODY_RATIO * max_size
    try:
        # a bounded read: the frame's declared size is not trusted (decompression bombs)
        reader = _decompressor().stream_reader(io.BytesIO(data[HEADER.size : HEADER.size + length]))
        raw = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        return Invalid("bad_compression", str(exc))
    if len(raw) > limit:
        return Invalid("bad_compression", f"body expands beyond {limit} bytes")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Invalid("bad_json", str(exc) or "nested too deeply")
    if not isinstance(obj, dict):
        return Invalid("bad_json", "body is not an object")
    try:
        body = Body.model_validate(obj)
    except ValidationError as exc:
        return Invalid("bad_fields", str(exc.errors()[0]["loc"]))
    return Announcement(
        kind=kind, node_id=node_id_for(public_key), public_key=public_key, body=body
    )
