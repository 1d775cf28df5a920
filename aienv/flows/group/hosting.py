"""What a node does for the members of its group: plan an environment within its
offer, launch it (cloning the workspace first from the swarm when it is not
here), and show, stop and tail what they placed here.

A launch request is checked before a byte is downloaded: the node must allow
group launches (``group_launch``), and the environment must fit what it offers
now (``Planner.offered``), else the request is refused with the reason. The
workspace is installed under its own name; a different workspace of that name
here refuses the launch rather than shadowing it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from pydantic import ValidationError

from aienv.config import NodeSettings
from aienv.discovery.peers import PeerTable
from aienv.errors import AienvError, Conflict, Forbidden, InvalidInput, NotFound, PeerUnreachable
from aienv.flows.clone import CloneManager
from aienv.flows.environments import Environments
from aienv.flows.planning import peer_environment
from aienv.names import check_name
from aienv.peer import PeerClient
from aienv.runtime.record import EnvRecord
from aienv.state.group import Member
from aienv.system import inventory
from aienv.workspace.manifest import Environment

log = logging.getLogger(__name__)

DETAILS_LIMIT = 256 * 1024


class Source:
    """Where a placed workspace comes from: a node (by id) and its workspace's name."""

    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise InvalidInput("a launch request names its source: {node_id, workspace}")
        self.node_id = str(data.get("node_id", "")).lower()
        if len(self.node_id) != 32 or any(c not in "0123456789abcdef" for c in self.node_id):
            raise InvalidInput("the source's node_id is 32 hex digits")
        self.workspace = check_name(str(data.get("workspace", "")), "workspace name")
        env = data.get("environment")
        self.environment = None if env is None else check_name(str(env), "environment name")
        spec = data.get("spec")  # a move: the environment as the moving node has it
        self.spec: dict[str, Any] | None = spec if isinstance(spec, dict) else None
        self.local: str | None = None  # its name on the asking node, when installed there

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "workspace": self.workspace,
                "environment": self.environment, "spec": self.spec}  # fmt: skip


class Hosting:
    def __init__(
        self,
        settings: NodeSettings,
        node_id: str,
        environments: Environments,
        clones: CloneManager,
        client: PeerClient,
        peers: PeerTable,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.environments = environments
        self.clones = clones
        self.client = client
        self.peers = peers
        self._launching: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, str] = {}  # env id → why its launch failed before a record

    # -- planning -----------------------------------------------------------------

    def _installed(self, source: Source) -> bool:
        """Whether the source's workspace is installed here under its name (refusing a
        different workspace of that name)."""
        store = self.environments.workspaces
        try:
            record = store.record(source.workspace)
        except NotFound:
            return False
        origin = record.origin or {}
        if origin.get("kind") == "clone":
            same = origin.get("peer_id") == source.node_id and (
                origin.get("workspace") == source.workspace
            )
        else:  # made, imported or moved here: this node is its source
            same = source.node_id == self.node_id
        if not same:
            raise Conflict(
                f"{self.settings.name} has another workspace named {source.workspace!r}",
                code="name_taken",
            )
        return True

    async def _environment(self, source: Source) -> Environment:
        """The environment to plan: from the local workspace, or the source's details."""
        if self._installed(source):
            manifest = self.environments.workspaces.get(source.workspace).manifest
            return manifest.environment(source.environment)
        if source.spec is not None:
            try:
                return peer_environment(source.spec)
            except (ValueError, ValidationError) as exc:
                raise InvalidInput(f"the moved environment is described badly: {exc}") from exc
        peer = self.peers.get(source.node_id)
        link = peer.link() if peer else None
        if peer is None or link is None:
            raise PeerUnreachable(
                f"{self.settings.name} does not see node {source.node_id[:12]} on its LAN"
            )
        details = await self.client.workspace(
            link, source.workspace, limit=DETAILS_LIMIT, timeout=5.0
        )
        items = details.get("environments") or []
        named = source.environment
        wanted = [
            e for e in items if isinstance(e, dict) and (named is None or e.get("name") == named)
        ]
        if not wanted:
            raise NotFound(f"{peer.name}'s {source.workspace} has no such environment")
        try:
            return peer_environment(wanted[0])
        except (ValueError, ValidationError) as exc:
            raise InvalidInput(f"{peer.name} describes that environment badly: {exc}") from exc

    async def plan(self, source: Source, *, own: bool = False) -> dict[str, Any]:
        """How the environment would fit here within the offer, with what is free and
        this node's load; ``own``: for this node's own group launch (which
        ``group_launch`` does not refuse)."""
        verdict: dict[str, Any]
        if not own and not self.settings.group_launch:
            verdict = {"fit": "cannot run here", "plan": None, "notes": [],
                       "shortfalls": [f"{self.settings.name} does not take launches from "
                                      "paired nodes (--no-group-launch)"]}  # fmt: skip
        else:
            try:
                env = await self._environment(source)
            except AienvError as exc:
                return {"fit": "cannot run here", "plan": None, "notes": [],
                        "shortfalls": [exc.message]}  # fmt: skip
            verdict = await self.environments.planner.preview(env, group=True)
        cap = await asyncio.to_thread(inventory.capacity, self.settings.home, kvm=False)
        cap = self.environments.planner.offered(cap)
        free = {"cpus": cap.cpus, "memory": cap.memory_free, "gpus": len(cap.gpus)}
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
        return {**verdict, "free": free, "load": round(load, 3), "offer": self.offer()}

    def offer(self) -> dict[str, Any]:
        s = self.settings
        return {"cpus": s.offer_cpus, "memory": s.offer_memory, "gpus": s.offer_gpus,
                "launches": s.group_launch}  # fmt: skip

    # -- launching ----------------------------------------------------------------

    async def launch(self, member: Member, source: Source) -> dict[str, Any]:
        """Start the placed launch: refused at once when it does not fit; else a clone
        (when the workspace is not here) or a launch, followed by ``placed``."""
        verdict = await self.plan(source)
        if verdict["fit"] not in ("fits", "fits with less"):
            raise DoesNotFitHere(f"{self.settings.name}: " + "; ".join(verdict["shortfalls"]))
        env_name = verdict["environment"]
        env_id = f"{source.workspace}.{env_name}"
        existing = self.environments.records.find(env_id)
        if existing is not None and existing.live:
            raise Conflict(f"{env_id} is already {existing.state} on {self.settings.name}")
        self._failed.pop(env_id, None)
        if self._installed(source):
            launching = self.environments.launch(
                source.workspace, env_name, requested_by=member.node_id
            )
            self.track(env_id, asyncio.get_running_loop().create_task(launching))
            return {"environment": env_id, "clone": None}
        job = self.clones.start(
            f"{source.node_id}/{source.workspace}", None, True,
            env_name=env_name, requested_by=member.node_id,
        )  # fmt: skip
        return {"environment": env_id, "clone": job.id}

    def track(self, env_id: str, task: asyncio.Task[Any]) -> None:
        """Follow a placed launch or move running here: ``placed`` shows it until it ends,
        and then why it failed, if it did."""
        self._failed.pop(env_id, None)
        self._launching[env_id] = task

        def ended(done: asyncio.Task[Any]) -> None:
            self._launching.pop(env_id, None)
            if done.cancelled():
                self._failed[env_id] = "cancelled (the node is stopping)"
            elif isinstance(done.exception(), AienvError):
                self._failed[env_id] = done.exception().message  # type: ignore[union-attr]
            elif done.exception() is not None:
                log.error("a placed launch of %s failed", env_id, exc_info=done.exception())
                self._failed[env_id] = str(done.exception())

        task.add_done_callback(ended)

    def placed(self, member: Member, env_id: str, clone_id: str | None) -> dict[str, Any]:
        """Where a placed launch stands: its clone, its environment, or why it failed."""
        clone = None
        if clone_id:
            job = self.clones.get(clone_id)
            if job.requested_by != member.node_id:
                raise Forbidden("that clone was not placed here by this node")
            clone = job.to_json()
        record = self.environments.records.find(env_id)
        if record is not None and record.requested_by != member.node_id:
            record = None  # an earlier run's, not this member's (yet)
        return {
            "node": self.settings.name,
            "clone": clone,
            "environment": shown(record, member) if record else None,
            "error": self._failed.get(env_id),
            "launching": env_id in self._launching,
        }

    # -- what runs here -------------------------------------------------------------

    def listing(self, member: Member) -> list[dict[str, Any]]:
        return [shown(r, member) for r in self.environments.all() if r.live]

    def _placed_by(self, member: Member, env_id: str) -> None:
        record = self.environments.get(env_id)
        if record.requested_by != member.node_id:
            raise Forbidden(
                f"{env_id} on {self.settings.name} was not placed there by this node: its "
                "own user stops it",
                code="not_placed_by_you",
            )

    async def stop(self, member: Member, env_id: str) -> dict[str, Any]:
        self._placed_by(member, env_id)
        return shown(await self.environments.stop(env_id), member)

    async def logs(self, member: Member, env_id: str, tail: int) -> str:
        self._placed_by(member, env_id)
        return await self.environments.logs(env_id, tail)


KEPT = ("id", "workspace", "environment", "runtime", "state", "error", "plan", "ports",
        "requested_by", "exit_code", "created_at", "updated_at")  # fmt: skip


def shown(record: EnvRecord, member: Member) -> dict[str, Any]:
    """An environment as a member sees it: no paths or runtime handles; its links from
    the LAN; the login link (the tool's secret) only to the member that placed it, and
    then on the LAN address."""
    data = record.to_json()
    out = {key: data[key] for key in KEPT}
    endpoints = []
    for ep in data["endpoints"]:
        login = ep.pop("login_url", None)
        if login and ep.get("lan_url") and record.requested_by == member.node_id:
            ep["login_url"] = f"{ep['lan_url']}?{login.partition('?')[2]}"
        endpoints.append(ep)
    out["endpoints"] = endpoints
    return out


class DoesNotFitHere(AienvError):
    code = "does_not_fit"
    status = 409
