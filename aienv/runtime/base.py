"""The runtime interface. Built-in runtimes and plugins implement the same class.

A runtime is found through the entry-point group ``aienv.runtimes`` (see
docs/plugins.md), built with no arguments, then given the node's settings with
``configure``. Every method that can block (an engine call, a disk copy) is a
coroutine; blocking library calls go to a thread so the node's event loop never
waits on them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from aienv.errors import AienvError
from aienv.workspace.manifest import Environment, Resources

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.system.plan import Plan


class Unsupported(AienvError):
    code = "unsupported"
    status = 409


@dataclass(slots=True, frozen=True)
class LaunchSpec:
    env_id: str
    workspace: str
    environment: Environment
    root: Path  # the installed workspace (read it; do not change it)
    ports: dict[str, int]  # endpoint name -> local port (the plan's ports)
    log_path: Path  # stdout/stderr or the console go here
    env: dict[str, str]  # variables for the environment (ports, plan, thread counts)
    plan: Plan
    state_dir: Path  # this environment's own folder (overlays, generated files); kept until removed
    node_id: str = ""
    previous: dict[str, Any] | None = None  # the handle of this environment's last run, if any
    #: persists a handle (on the event loop). A runtime calls it once the environment
    #: exists but before it runs, so that a node killed at that moment still knows,
    #: after its restart, what it made; None when nobody keeps handles (direct use)
    record: Callable[[dict[str, Any]], None] | None = None


class Runtime(ABC):
    """Launches one kind of environment. Handles are JSON-serialisable dicts the
    node persists, so a restarted node can find what it launched."""

    kind: ClassVar[str]
    #: resources assumed when the workspace names none (a VM needs a memory size)
    defaults: ClassVar[Resources] = Resources()
    #: whether the plan should choose KVM or TCG for this runtime
    wants_accel: ClassVar[bool] = False
    #: a plugin's model for ``options`` in workspace.yaml, checked at plan time
    options_model: ClassVar[type[BaseModel] | None] = None

    def configure(self, settings: NodeSettings) -> None:  # noqa: B027 - optional hook
        """Receive the node's settings (called once, before anything else)."""

    def available(self) -> tuple[bool, str]:
        """Whether this runtime can run here, and why not (shown by ``aienv system``)."""
        return True, ""

    def check(self, env: Environment, root: Path) -> None:  # noqa: B027 - optional hook
        """Raise ``RuntimeFailure`` naming what is wrong before anything is started
        (a missing image file, bad options). Called by ``plan`` and ``launch``."""

    @abstractmethod
    async def async_launch(self, spec: LaunchSpec) -> dict[str, Any]:
        """Start the environment; return its handle. Raise ``RuntimeFailure`` on failure.

        A runtime that can first make the environment and then let it run (create a
        container, then start it) gives ``spec.record`` the handle in between: what
        runs is then always recorded, whenever the node dies."""

    @abstractmethod
    async def async_wait(self, handle: dict[str, Any]) -> int | None:
        """Wait until the environment ends; return its exit code if known."""

    @abstractmethod
    async def async_stop(self, handle: dict[str, Any], timeout: float) -> None:
        """Stop the environment: politely, then by force after ``timeout`` seconds."""

    @abstractmethod
    def is_running(self, handle: dict[str, Any]) -> bool:
        """Whether what ``handle`` names is still running (used after a node restart)."""

    async def async_remove(self, handle: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Forget a stopped environment for good: delete what ``launch`` created
        outside ``state_dir`` (containers, VM definitions). The default does nothing."""

    async def async_prepare_share(self, env: Environment, root: Path) -> list[str]:
        """Before ``root`` is packed for sharing, bring in what ``env`` needs from this
        machine (a local container image); return the workspace paths it wrote."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of engine connections when the node stops (idempotent; what runs
        is stopped by the node before, through ``async_stop``)."""

    def details(self, handle: dict[str, Any]) -> dict[str, Any]:
        """Runtime facts worth showing in ``aienv ps`` (container id, domain name)."""
        return {}

    # -- snapshots (VMs); other runtimes say they have none ------------------

    async def async_snapshot_create(self, handle: dict[str, Any], name: str) -> dict[str, Any]:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")

    async def async_snapshot_list(self, handle: dict[str, Any]) -> list[dict[str, Any]]:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")

    async def async_snapshot_revert(self, handle: dict[str, Any], name: str) -> None:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")

    async def async_snapshot_delete(self, handle: dict[str, Any], name: str) -> None:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")
