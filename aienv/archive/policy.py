"""Which files are worth compressing: decided by extension, then by a sample.

Model weights, disk images, media and archives are already dense; deflating
them costs CPU on both sides and saves nothing, so they are stored. Anything
else is sampled (a few 64 KiB slices compressed at the fastest level) and
stored when the sample does not shrink by at least ``MIN_SAVING``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

STORED_EXTENSIONS = frozenset(
    {
        # model weights and tensors
        ".safetensors", ".gguf", ".ggml", ".bin", ".pt", ".pth", ".ckpt", ".onnx",
        ".h5", ".keras", ".tflite", ".mlmodel", ".pb",
        # disk and container images
        ".qcow2", ".img", ".iso", ".vmdk", ".vdi", ".vhd", ".vhdx", ".raw",
        # compressed archives and packages
        ".zip", ".gz", ".tgz", ".bz2", ".xz", ".txz", ".zst", ".lz4", ".7z", ".rar",
        ".whl", ".jar", ".deb", ".rpm", ".apk",
        # media
        ".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".heic",
        ".mp3", ".mp4", ".m4a", ".ogg", ".opus", ".flac", ".webm", ".mkv", ".avi", ".mov",
        # columnar data that is compressed inside
        ".parquet", ".orc", ".arrow",
    }
)  # fmt: skip
SAMPLE = 64 * 1024
SAMPLES = 3
MIN_SAVING = 0.10  # store unless deflate saves at least 10 % on the sample
SMALL = 512  # tiny files always deflate: the sample would be noise


def should_compress(path: Path, size: int) -> bool:
    """True to deflate ``path``, False to store it (blocking: reads up to 192 KiB)."""
    if path.suffix.lower() in STORED_EXTENSIONS:
        return False
    if size <= SMALL:
        return True
    offsets = sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)})[:SAMPLES]
    raw = 0
    packed = 0
    with path.open("rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            chunk = handle.read(SAMPLE)
            raw += len(chunk)
            packed += len(zlib.compress(chunk, 1))
    return raw > 0 and packed <= raw * (1 - MIN_SAVING)
