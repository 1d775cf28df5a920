"""The sources of one download: who they are, what they have, how fast they are, and
what becomes of one that fails (backed off, told to wait, or dropped for good)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aienv.errors import (
    AienvError,
    Busy,
    NotOnPeer,
    PeerImpostor,
    PeerRefused,
    PeerUnreachable,
)
from aienv.peer import Link, PeerClient
from aienv.transfer.holdings import parse_bitfield

log = logging.getLogger(__name__)

BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
IN_LINE = 1.0  # a request kept this long in a peer's line for a slot: its back-off is done


@dataclass(slots=True)
class SourceStatus:
    """A source as a clone job shows it."""

    name: str
    url: str
    origin: bool
    complete: bool
    state: str
    bytes: int
    rate: int
    error: str | None


class SourceFailed(Exception):
    """A source's request failed; ``retry_after``: wait that long, ``drop``: never again;
    ``waited``: the seconds it kept the request in its line before it said it was busy."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        drop: bool = False,
        waited: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.drop = drop
        self.waited = waited


def failure(exc: AienvError, waited: float = 0.0) -> SourceFailed:
    """What a peer client's error means for the source that answered it, ``waited``
    seconds after it was asked."""
    if isinstance(exc, Busy):
        return SourceFailed("busy serving other peers", retry_after=exc.retry_after, waited=waited)
    if isinstance(exc, NotOnPeer):
        return SourceFailed("does not hold the archive", drop=True)
    if isinstance(exc, PeerRefused | PeerImpostor):  # it will not let us, or is not who it
        return SourceFailed(exc.message, drop=True)  # claims: never again
    if isinstance(exc, PeerUnreachable):
        return SourceFailed(exc.message)
    return SourceFailed(exc.message, drop=True)  # an answer this node cannot use


@dataclass(slots=True)
class Source:
    link: Link
    name: str
    origin: bool = False
    have: bytearray | None = None  # None: the source has every piece
    rate: float = 0.0  # bytes/s, smoothed
    delivered: int = 0
    failures: int = 0
    bad_pieces: int = 0
    in_flight: int = 0
    retry_at: float = 0.0
    state: str = "ready"  # ready | busy | backoff | dropped
    error: str | None = None

    @property
    def url(self) -> str:
        return self.link.url

    def has(self, index: int) -> bool:
        return self.have is None or bool(self.have[index])

    def usable(self, now: float) -> bool:
        return self.state != "dropped" and now >= self.retry_at

    def lacks(self, pieces: list[int], count: int) -> None:
        """It said it does not have ``pieces`` (yet): until its next bitfield, take it
        as holding nothing more."""
        if self.have is None:
            self.have = bytearray(count)
        for index in pieces:
            self.have[index] = 0

    def failed(self, exc: SourceFailed, *, alone: bool = False) -> None:
        """Back off, wait as told, or drop it. A busy source that kept the request in its
        line for a slot is asked again at once when it is the only one (``alone``) with
        those pieces: a pause there would leave the slot that frees meanwhile idle."""
        self.error = str(exc)
        if exc.drop:
            self.state = "dropped"
            log.info("dropping source %s: %s", self.name, exc)
            return
        if exc.retry_after is not None:
            self.state = "busy"
            wait = 0.0 if alone and exc.waited >= IN_LINE else exc.retry_after
            self.retry_at = time.monotonic() + wait * random.uniform(1.0, 1.3)
            return
        delay = BACKOFF[min(self.failures, len(BACKOFF) - 1)]
        self.failures += 1
        self.state = "backoff"
        self.retry_at = time.monotonic() + delay
        log.info("source %s failed (%s); retrying in %.1f s", self.name, exc, delay)

    async def refresh(self, client: PeerClient, digest: str, count: int) -> bool:
        """Ask which pieces it has now; True when it said."""
        try:
            have = await client.have(self.link, digest)
        except NotOnPeer:
            self.state, self.error = "dropped", "no longer holds the archive"
            return False
        except AienvError:
            return False  # asked again on the next refresh
        try:
            if have == "all":
                self.have = None
            elif have is not None:
                self.have = parse_bitfield(have, count)
        except ValueError:
            return False
        return have is not None

    def status(self) -> SourceStatus:
        return SourceStatus(
            name=self.name,
            url=self.url,
            origin=self.origin,
            complete=self.have is None,
            state=self.state,
            bytes=self.delivered,
            rate=round(self.rate),
            error=self.error,
        )


def replaceable(sources: Iterable[Source], source: Source, run: list[int], now: float) -> bool:
    """Another usable source than ``source`` holds every piece of ``run``."""
    return any(s is not source and s.usable(now) and all(s.has(i) for i in run) for s in sources)


def errors(sources: Iterable[Source]) -> str:
    """What went wrong with each source, for a message."""
    parts = [f"{s.name}: {s.error}" for s in sources if s.error]
    return "; ".join(parts) or "no error reported"
