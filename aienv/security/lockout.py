"""Addresses that keep failing to log in are locked out for a while.

``FAILURES`` failed attempts within ``WINDOW`` seconds lock the address for
``LOCK`` seconds; a success clears its count. Guessing from many addresses (a
host's aliases, a subnet) gets past that, so the failures of all addresses are
counted too: ``GLOBAL_FAILURES`` of them within ``WINDOW`` is an attack, during
which the API lets one new password through its check per ``GLOBAL_PACE``
seconds, from everyone (``under_attack``). Pure logic with an injected clock,
bounded in memory (the oldest addresses are forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

FAILURES = 5
WINDOW = 60.0
LOCK = 300.0
MAX_TRACKED = 10_000
GLOBAL_FAILURES = 20
GLOBAL_PACE = 1.0


@dataclass(slots=True)
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class Lockout:
    def __init__(
        self,
        failures: int = FAILURES,
        window: float = WINDOW,
        lock: float = LOCK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window = window
        self.lock = lock
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._all: deque[float] = deque(maxlen=GLOBAL_FAILURES)  # the last failures, any address

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it is not locked out."""
        record = self._records.get(address)
        if record is None:
            return 0.0
        return max(0.0, record.locked_until - self._clock())

    def failed(self, address: str) -> bool:
        """Count a failure; True when this one locks the address out."""
        now = self._clock()
        self._all.append(now)
        record = self._records.pop(address, None) or _Record()
        self._records[address] = record  # most recent last
        while len(self._records) > MAX_TRACKED:
            self._records.popitem(last=False)
        record.failures = [t for t in record.failures if now - t < self.window] + [now]
        if len(record.failures) >= self.failures:
            record.failures.clear()
            record.locked_until = now + self.lock
            return True
        return False

    def under_attack(self) -> bool:
        """Whether ``GLOBAL_FAILURES`` logins failed within ``WINDOW``, from any addresses."""
        full = len(self._all) == GLOBAL_FAILURES
        return full and self._clock() - self._all[0] < self.window

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)

    def locked(self) -> dict[str, float]:
        """The addresses locked out now, with the seconds they still wait."""
        now = self._clock()
        return {a: r.locked_until - now for a, r in self._records.items() if r.locked_until > now}
