"""The runtime interface. Built-in runtimes and plugins implement the same class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aienv.workspace.manifest import Environment


@dataclass(slots=True, frozen=True)
class LaunchSpec:
    env_id: str
    workspace: str
    environment: Environment
    root: Path
    ports: dict[str, int]
    log_path: Path
    env: dict[str, str]


class Runtime(ABC):
    """Launches one kind of environment. Handles are JSON-serialisable dicts the
    node persists, so a restarted node can find what it launched."""

    kind: ClassVar[str]

    @abstractmethod
    async def async_launch(self, spec: LaunchSpec) -> dict[str, Any]:
        """Start the environment; return its handle. Raise ``RuntimeFailure`` on failure."""

    @abstractmethod
    async def async_wait(self, handle: dict[str, Any]) -> int | None:
        """Wait until the environment ends; return its exit code if known."""

    @abstractmethod
    async def async_stop(self, handle: dict[str, Any], timeout: float) -> None:
        """Stop the environment: politely, then by force after ``timeout`` seconds."""

    @abstractmethod
    def is_running(self, handle: dict[str, Any]) -> bool:
        """Whether what ``handle`` names is still running (used after a node restart)."""

    def available(self) -> tuple[bool, str]:
        """Whether this runtime can run here, and why not."""
        return True, ""
