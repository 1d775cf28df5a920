"""Fetch an archive from a peer into a partial file, hashing on the fly.

An interrupted download is resumed with ``Range`` from the bytes already on
disk (the hash state continues, so nothing is read twice); the finished file is
verified against the digest from the peer's signed announcement.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp

from aienv.errors import IntegrityError, PeerUnreachable, TransferError

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


async def fetch_archive(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    digest: str,
    size: int,
    on_progress: Callable[[int], None],
) -> None:
    """Download ``url`` into ``dest`` and check it is ``size`` bytes with sha256 ``digest``."""
    hasher = hashlib.sha256()
    done = 0
    attempt = 0
    with dest.open("wb") as out:
        while done < size or size == 0:
            headers = {"Range": f"bytes={done}-"} if done else {}
            try:
                async with session.get(url, headers=headers, params={"digest": digest}) as resp:
                    if resp.status == 409:
                        raise TransferError(
                            "the workspace changed on the peer during the download: clone again"
                        )
                    if resp.status == 404:
                        raise TransferError("the peer no longer shares this workspace")
                    if resp.status not in (200, 206) or (done and resp.status != 206):
                        raise TransferError(f"the peer answered HTTP {resp.status} for the archive")
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        if done + len(chunk) > size:
                            raise IntegrityError(
                                f"the peer sent more than the announced {size} bytes"
                            )
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        on_progress(done)
                if done < size:
                    raise aiohttp.ClientPayloadError("connection closed before the end")
                break
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                if attempt >= len(RETRY_DELAYS):
                    raise PeerUnreachable(
                        f"download failed after {attempt + 1} attempts "
                        f"({exc or type(exc).__name__}); "
                        f"{done} of {size} bytes arrived: is the peer still up?"
                    ) from exc
                log.info("download of %s interrupted at %d bytes (%s), resuming", url, done, exc)
                await asyncio.sleep(RETRY_DELAYS[attempt])
                attempt += 1
        out.flush()
    got = hasher.hexdigest()
    if got != digest:
        raise IntegrityError(
            f"the archive's sha256 is {got[:16]}…, not the announced {digest[:16]}…: "
            "it was corrupted in transit or by the peer; nothing was installed"
        )
