"""The runtime interface. Built-in runtimes and plugins implement the same class.

A runtime is found through the entry-point group ``aienv.runtimes`` (see
docs/plugins.md), built with no arguments, then given the node's settings with
``configure``. Every method that can block (an engine call, a disk copy, a look
at the process table) is a coroutine, and a runtime sends its blocking library
calls to a worker thread in one place, so the node's event loop never waits on
them. Coroutines carry no ``async_`` prefix (a rule for all of aienv).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from pydantic import BaseModel

from aienv.errors import AienvError
from aienv.runtime.terminal import Terminal
from aienv.workspace.manifest import Environment, Resources

if TYPE_CHECKING:
    from aienv.config import NodeSettings
    from aienv.system.plan import Plan

#: what a runtime records of an environment it launched (a pid, a container id, a
#: domain name): a JSON object only the runtime reads, persisted by the node so a
#: restarted node finds what it launched
Handle: TypeAlias = dict[str, Any]


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
    previous: Handle | None = None  # the handle of this environment's last run, if any
    #: persists a handle (on the event loop). A runtime calls it once the environment
    #: exists but before it runs, so that a node killed at that moment still knows,
    #: after its restart, what it made; None when nobody keeps handles (direct use)
    record: Callable[[Handle], None] | None = None


class Runtime(ABC):
    """Launches one kind of environment. Handles are JSON objects the node persists,
    so a restarted node can find what it launched."""

    kind: ClassVar[str]
    #: resources assumed when the workspace names none (a VM needs a memory size)
    defaults: ClassVar[Resources] = Resources()
    #: whether the plan should choose KVM or TCG for this runtime
    wants_accel: ClassVar[bool] = False
    #: whether what publishes its ports runs as root (Docker's engine): else a declared
    #: port below 1024 is planned on a free port above it
    binds_as_root: ClassVar[bool] = False
    #: a plugin's model for ``options`` in workspace.yaml, checked at plan time
    options_model: ClassVar[type[BaseModel] | None] = None

    def configure(self, settings: NodeSettings) -> None:  # noqa: B027 - optional hook
        """Receive the node's settings (called once, before anything else; must not block)."""

    async def available(self) -> tuple[bool, str]:
        """Whether this runtime can run here, and why not (shown by ``aienv system``)."""
        return True, ""

    async def check(self, env: Environment, root: Path) -> None:  # noqa: B027 - optional hook
        """Raise ``RuntimeFailure`` naming what is wrong before anything is started
        (a missing image file, bad options). Called by ``plan`` and ``launch``."""

    @abstractmethod
    async def launch(self, spec: LaunchSpec) -> Handle:
        """Start the environment; return its handle. Raise ``RuntimeFailure`` on failure.

        A runtime that can first make the environment and then let it run (create a
        container, then start it) gives ``spec.record`` the handle in between: what
        runs is then always recorded, whenever the node dies."""

    @abstractmethod
    async def wait(self, handle: Handle) -> int | None:
        """Wait until the environment ends; return its exit code if known."""

    @abstractmethod
    async def stop(self, handle: Handle, timeout: float) -> None:
        """Stop the environment: politely, then by force after ``timeout`` seconds."""

    @abstractmethod
    async def is_running(self, handle: Handle) -> bool:
        """Whether what ``handle`` names is still running (used after a node restart)."""

    async def remove(self, handle: Handle) -> None:  # noqa: B027 - optional hook
        """Forget a stopped environment for good: delete what ``launch`` created
        outside ``state_dir`` (containers, VM definitions). The default does nothing."""

    def confinement(self, env: Environment, plan: Plan) -> list[str]:
        """What a launch of ``env`` will be allowed to do, in lines a person reads before
        it runs (``aienv plan``, the launch, the web UI). Must not block."""
        return []

    async def prepare_share(self, env: Environment, root: Path) -> list[str]:
        """Before ``root`` is packed for sharing, bring in what ``env`` needs from this
        machine (a local container image); return the workspace paths it wrote."""
        return []

    async def export_state(self, handle: Handle, state_dir: Path) -> None:  # noqa: B027
        """Before a stopped environment moves to another node with its ``state_dir``,
        write into it what the runtime keeps elsewhere (a VM's snapshot descriptions)."""

    async def adopt_state(self, env: Environment, root: Path, state_dir: Path) -> None:  # noqa: B027
        """A ``state_dir`` moved here from another node, before the first launch: fit
        it to this node (a VM's overlay onto this node's copy of its image)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of engine connections when the node stops (idempotent; what runs
        is stopped by the node before, through ``stop``)."""

    def details(self, handle: Handle) -> dict[str, Any]:
        """Runtime facts worth showing in ``aienv ps`` (container id, domain name),
        read from the handle alone (no engine call)."""
        return {}

    async def terminal(self, spec: LaunchSpec, handle: Handle) -> Terminal:
        """A shell in the running environment ``handle`` names, as the environment's own
        user in its own view of the machine (the web page's terminal, ``aienv shell``)."""
        raise Unsupported(f"the {self.kind} runtime has no terminal")

    # -- snapshots (VMs); other runtimes say they have none ------------------

    async def snapshot_create(self, handle: Handle, name: str) -> dict[str, Any]:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")

    async def snapshot_list(self, handle: Handle) -> list[dict[str, Any]]:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")

    async def snapshot_revert(self, handle: Handle, name: str) -> None:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")

    async def snapshot_delete(self, handle: Handle, name: str) -> None:
        raise Unsupported(f"the {self.kind} runtime has no snapshots")
