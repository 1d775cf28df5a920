"""Transfers in flight (uploads and downloads), for ``GET /api/v1/transfers``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["upload", "download", "pack"]
_ids = itertools.count(1)


@dataclass(slots=True)
class Transfer:
    direction: Direction
    peer: str
    workspace: str
    total: int
    done: int = 0
    state: str = "active"
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    digest: str | None = None
    error: str | None = None
    cancel: Callable[[], None] | None = field(default=None, repr=False)
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def rate(self) -> float:
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.rate
        if self.state != "active" or rate <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def finish(self, state: str, error: str | None = None) -> None:
        if self.state == "active":
            self.state = state
            self.error = error
            self.finished = time.monotonic()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "direction": self.direction,
            "peer": self.peer,
            "workspace": self.workspace,
            "bytes": self.done,
            "total": self.total,
            "rate": round(self.rate),
            "eta": None if self.eta is None else round(self.eta, 1),
            "state": self.state,
            "digest": self.digest,
            "error": self.error,
            "cancellable": self.state == "active" and self.cancel is not None,
        }


class Transfers:
    """Active transfers plus the last few finished ones."""

    KEEP_FINISHED = 50

    def __init__(self) -> None:
        self._items: list[Transfer] = []

    def start(self, direction: Direction, peer: str, workspace: str, total: int) -> Transfer:
        transfer = Transfer(direction, peer, workspace, total)
        self._items.append(transfer)
        finished = [t for t in self._items if t.state != "active"]
        for old in finished[: max(0, len(finished) - self.KEEP_FINISHED)]:
            self._items.remove(old)
        return transfer

    def pack(self, workspace: str, cancel: Callable[[], None]) -> Transfer:
        """A workspace being packed into its archive (cancellable from the list)."""
        transfer = self.start("pack", "", workspace, 0)
        transfer.cancel = cancel
        return transfer

    def all(self) -> list[Transfer]:
        return list(self._items)

    def get(self, transfer_id: int) -> Transfer | None:
        return next((t for t in self._items if t.id == transfer_id), None)
