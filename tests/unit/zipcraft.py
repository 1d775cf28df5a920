"""Hand-built ZIP archives for the extraction tests.

``zipfile`` writes only honest archives. Here every field of an entry can be
set, so a test lies exactly where it means to (a size, a CRC, the local name,
a ZIP64 field, the data itself) and the rest of the archive stays valid: local
headers, central directory and end record agree on every offset.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

LOCAL = struct.Struct("<4s2B4HL2L2H")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
END = struct.Struct("<4s4H2LH")
ZIP64_SIZES = struct.Struct("<2H2Q")  # tag 1, 16 bytes: uncompressed, compressed size
MAX32 = 0xFFFFFFFF
DOS_DATE = 0x21  # 1980-01-01


def deflate(data: bytes) -> bytes:
    """Raw deflate, as a ZIP entry holds it."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@dataclass(slots=True)
class Entry:
    """One entry; what is left as None is filled in honestly from ``content``."""

    name: str
    content: bytes = b""
    method: int = zipfile.ZIP_STORED
    packed: bytes | None = None  # the bytes written as its data (content, deflated if asked)
    size: int | None = None  # declared uncompressed size
    compressed: int | None = None  # declared compressed size (len(packed))
    crc: int | None = None
    mode: int = stat.S_IFREG | 0o644
    flags: int = 0
    zip64: bool = False  # sizes in a ZIP64 field of both headers, 0xFFFFFFFF in the 32-bit ones
    local_name: str | None = None  # the name in the local header (the central one)


def build(*entries: Entry) -> bytes:
    body = bytearray()
    central = bytearray()
    for e in entries:
        packed = e.packed
        if packed is None:
            packed = deflate(e.content) if e.method == zipfile.ZIP_DEFLATED else e.content
        size = len(e.content) if e.size is None else e.size
        compressed = len(packed) if e.compressed is None else e.compressed
        crc = zlib.crc32(e.content) if e.crc is None else e.crc
        extra = ZIP64_SIZES.pack(1, 16, size, compressed) if e.zip64 else b""
        size32, compressed32 = (MAX32, MAX32) if e.zip64 else (size, compressed)
        version = 45 if e.zip64 else 20
        local_name = (e.name if e.local_name is None else e.local_name).encode()
        name = e.name.encode()
        offset = len(body)
        body += LOCAL.pack(
            b"PK\x03\x04", version, 0, e.flags, e.method, 0, DOS_DATE,
            crc, compressed32, size32, len(local_name), len(extra),
        )  # fmt: skip
        body += local_name + extra + packed
        central += CENTRAL.pack(
            b"PK\x01\x02", version, 3, version, 0, e.flags, e.method, 0, DOS_DATE,
            crc, compressed32, size32, len(name), len(extra), 0, 0, 0, e.mode << 16, offset,
        )  # fmt: skip
        central += name + extra
    end = END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)
    return bytes(body + central + end)


def write(path: Path, *entries: Entry) -> Path:
    path.write_bytes(build(*entries))
    return path
