"""Placing an environment on the node of the group where it fits best.

``rank`` asks every candidate — this node and each paired node on the LAN, or
the one named — how the environment would fit there now (each plans it within
what it offers the group, this node included), and orders them: fits fully before fits with less,
then a GPU used, then more free memory, then a lower load. ``launch`` asks the
first to run it: a member clones the workspace from the swarm if it does not
hold it, launches it in its own sandbox with its own plan, and this node
follows the launch until the environment answers or fails, then remembers
where it runs (``state.group.Placement``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aienv.discovery.peers import PeerTable
from aienv.errors import AienvError, Conflict, InvalidInput, NotFound, RuntimeFailure
from aienv.flows.group.hosting import DoesNotFitHere, Hosting, Source
from aienv.flows.group.members import Members
from aienv.names import check_name
from aienv.peer import Link, PeerClient
from aienv.state.group import GroupState, Member, Placement

FITS = {"fits": 0, "fits with less": 1}
FOLLOW_EVERY = 0.5  # at most; the first polls come sooner (``_pause``)
FOLLOW_FOR = 1800.0  # a clone of tens of GB over a slow link, then the launch


@dataclass(slots=True)
class Candidate:
    name: str
    node_id: str
    verdict: dict[str, Any]
    member: Member | None = None  # None: this node
    link: Link | None = None

    @property
    def fits(self) -> bool:
        return self.verdict.get("fit") in FITS

    def key(self) -> tuple[int, int, float, float]:
        plan = self.verdict.get("plan") or {}
        gpu = 0 if (plan.get("gpu") or {}).get("use") else 1
        free = self.verdict.get("free") or {}
        return (FITS.get(str(self.verdict.get("fit")), 9), gpu,
                -float(free.get("memory") or 0), float(self.verdict.get("load") or 0))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"node": self.name, "node_id": self.node_id, "here": self.member is None,
                **self.verdict}  # fmt: skip


class Placer:
    def __init__(
        self,
        name: str,
        node_id: str,
        group: GroupState,
        members: Members,
        hosting: Hosting,
        client: PeerClient,
        peers: PeerTable,
    ) -> None:
        self.name = name
        self.node_id = node_id
        self.group = group
        self.members = members
        self.hosting = hosting
        self.client = client
        self.peers = peers

    # -- what to place ----------------------------------------------------------------

    def source(self, ref: str, environment: str | None) -> Source:
        """The workspace ``ref`` (a local name, or PEER/WORKSPACE) as members fetch it."""
        env = None if environment is None else check_name(environment, "environment name")
        peer_ref, _, ws = ref.rpartition("/")
        if peer_ref and peer_ref != self.name and not self.node_id.startswith(peer_ref):
            peer = self.peers.resolve(peer_ref)
            return Source({"node_id": peer.node_id, "workspace": ws, "environment": env})
        ref = ws  # this node's own
        record = self.hosting.environments.workspaces.record(ref)
        origin = record.origin or {}
        if record.shared or origin.get("kind") != "clone":
            if not record.shared:
                raise Conflict(
                    f"workspace {ref} is not shared, so no other node can fetch it: share it "
                    f"first (aienv share {ref}), or launch it here",
                    code="not_shared",
                )
            source = Source({"node_id": self.node_id, "workspace": ref, "environment": env})
        else:
            source = Source({"node_id": origin["peer_id"], "workspace": origin["workspace"],
                             "environment": env})  # fmt: skip
        source.local = ref
        return source

    # -- ranking ----------------------------------------------------------------------

    async def rank(self, source: Source, on: str) -> list[Candidate]:
        """The candidates for ``on`` ("auto", "here", or a member), best first."""
        wanted: list[Member | None]
        if on == "auto":
            wanted = [None, *self.group.members()]
        elif on in ("here", self.name):
            wanted = [None]
        else:
            wanted = [self.members.find(on)]
        candidates = await asyncio.gather(*(self._ask(m, source) for m in wanted))
        return sorted(candidates, key=Candidate.key)

    async def _ask(self, member: Member | None, source: Source) -> Candidate:
        if member is None:  # this node too runs a group launch within its offer
            verdict = await self.hosting.plan(source, own=True)
            return Candidate(self.name, self.node_id, verdict)
        peer = self.peers.get(member.node_id)
        link = peer.link() if peer else None
        if link is None:
            verdict = {"fit": "cannot run here", "plan": None, "notes": [],
                       "shortfalls": [f"{member.name} is not on the LAN now"]}  # fmt: skip
            return Candidate(member.name, member.node_id, verdict, member)
        try:
            verdict = await self.client.member(
                link, member.node_id, "POST", "/api/v1/member/plan", f"a plan from {member.name}",
                source.to_json(),
            )  # fmt: skip
        except AienvError as exc:
            verdict = {"fit": "cannot run here", "plan": None, "notes": [],
                       "shortfalls": [exc.message]}  # fmt: skip
        return Candidate(member.name, member.node_id, verdict, member, link)

    # -- launching ----------------------------------------------------------------------

    async def launch(
        self, ref: str, environment: str | None, on: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        if on != "auto" and not on:
            raise InvalidInput("--on names a paired node, 'here' or 'auto'")
        source = self.source(ref, environment)
        ranking = await self.rank(source, on)
        shown = [c.to_json() for c in ranking]
        if dry_run:
            return {"ranking": shown}
        best = next((c for c in ranking if c.fits), None)
        if best is None:
            reasons = "; ".join(
                f"{c.name}: {'; '.join(c.verdict.get('shortfalls') or []) or c.verdict.get('fit')}"
                for c in ranking
            )
            raise DoesNotFitHere(f"no node of the group can run it — {reasons}")
        started = time.monotonic()
        if best.member is None:
            record = await self._here(source)
        else:
            record = await self._there(best, source)
        return {"node": best.name, "node_id": best.node_id, "ranking": shown,
                "environment": record, "seconds": round(time.monotonic() - started, 2)}  # fmt: skip

    async def _here(self, source: Source) -> dict[str, Any]:
        environments, me, env = self.hosting.environments, self.node_id, source.environment
        if source.local is not None:
            return (await environments.launch(source.local, env, requested_by=me)).to_json()
        job = self.hosting.clones.start(
            f"{source.node_id}/{source.workspace}", None, True, env_name=env, requested_by=me
        )
        deadline = time.monotonic() + FOLLOW_FOR
        while not job.ended and time.monotonic() < deadline:
            await asyncio.sleep(FOLLOW_EVERY)
            job = self.hosting.clones.get(job.id)
        if job.environment is None:
            why = job.error or job.setup_error or job.refused
            raise RuntimeFailure(f"the clone here ended {job.state}: {why}")
        return environments.get(job.environment).to_json()

    async def _there(self, best: Candidate, source: Source) -> dict[str, Any]:
        assert best.member is not None and best.link is not None
        member, link = best.member, best.link
        started = await self.client.member(
            link, member.node_id, "POST", "/api/v1/member/launch", f"a launch on {member.name}",
            source.to_json(),
        )  # fmt: skip
        env_id = str(started["environment"])
        self.group.place(Placement(env_id, member.node_id, member.name, source.workspace,
                                   env_id.split(".", 1)[1]))  # fmt: skip
        return await self.follow(member, link, env_id, started.get("clone"))

    async def follow(
        self, member: Member, link: Link, env_id: str, clone: str | None
    ) -> dict[str, Any]:
        """Wait until a launch placed on ``member`` runs (its record) or fails (raised)."""
        path = f"/api/v1/member/placed/{env_id}" + (f"?clone={clone}" if clone else "")
        deadline = time.monotonic() + FOLLOW_FOR
        polls = 0
        while time.monotonic() < deadline:
            status = await self.client.member(
                link, member.node_id, "GET", path, f"the launch on {member.name}"
            )
            record, job = status.get("environment"), status.get("clone")
            if status.get("error"):
                raise RuntimeFailure(f"{member.name}: {status['error']}")
            if job and job.get("state") in ("failed", "cancelled"):
                raise RuntimeFailure(f"{member.name}: the clone failed: {job.get('error')}")
            if job and job.get("state") == "installed":
                why = (job.get("setup_error") or job.get("refused")
                       or f"it needs values for {', '.join(job['needs'])}")  # fmt: skip
                raise RuntimeFailure(f"{member.name} installed it but did not launch it: {why}")
            ours = not job or job.get("state") == "running"  # else a record of an earlier run
            if ours and record and record.get("state") == "running":
                return dict(record)
            if ours and record and record.get("state") == "failed" and not status.get("launching"):
                raise RuntimeFailure(f"{member.name}: {env_id} failed: {record.get('error')}")
            polls += 1
            await asyncio.sleep(min(FOLLOW_EVERY, 0.05 * 1.25**polls))
        raise RuntimeFailure(f"{member.name} did not report {env_id} running in time")

    # -- the group's environments -----------------------------------------------------

    async def environments(self) -> list[dict[str, Any]]:
        """Every live environment of this node and of its members on the LAN; what this
        node placed on a member that is gone, as lost."""
        rows = [{**r.to_json(), "node": self.name, "node_id": self.node_id, "here": True}
                for r in self.hosting.environments.all() if r.live]  # fmt: skip
        online: set[str] = set()

        async def ask(member: Member) -> list[dict[str, Any]]:
            peer = self.peers.get(member.node_id)
            link = peer.link() if peer else None
            if link is None:
                return []
            try:
                answer = await self.client.member(
                    link, member.node_id, "GET", "/api/v1/member/environments",
                    f"the environments of {member.name}", timeout=5.0,
                )  # fmt: skip
            except AienvError:
                return []
            online.add(member.node_id)
            return [{**r, "node": member.name, "node_id": member.node_id, "here": False}
                    for r in answer.get("environments") or [] if isinstance(r, dict)]  # fmt: skip

        for listed in await asyncio.gather(*(ask(m) for m in self.group.members())):
            rows += listed
        running = {(r["node_id"], r.get("id")) for r in rows}
        for placed in self.group.placements():
            if placed.node_id not in online:
                rows.append({"id": placed.id, "workspace": placed.workspace, "node":
                             placed.node_name, "node_id": placed.node_id, "here": False,
                             "state": "lost", "endpoints": [], "plan": None,
                             "error": f"{placed.node_name} left the LAN"})  # fmt: skip
            elif (placed.node_id, placed.id) not in running and (
                time.time() - placed.created_at > FOLLOW_FOR  # not still being cloned there
            ):  # it ended there: nothing left to follow
                self.group.forget_placement(placed.key)
        return rows

    def where(self, env_id: str, node: str | None) -> tuple[Member, Link]:
        """The member an environment runs on (named, or where this node placed it)."""
        if node:
            member = self.members.find(node)
        else:
            found = [p for p in self.group.placements() if p.id == env_id]
            if not found:
                raise NotFound(
                    f"no environment {env_id} here, nor one this node placed on another node "
                    "(name its node: --on NODE)",
                    code="environment_not_found",
                )
            member = self.members.find(found[-1].node_id)
        peer = self.peers.get(member.node_id)
        link = peer.link() if peer else None
        if link is None:
            raise NotFound(f"{member.name} is not on the LAN now", code="peer_not_found")
        return member, link

    async def stop(self, env_id: str, node: str | None) -> dict[str, Any]:
        member, link = self.where(env_id, node)
        record = await self.client.member(
            link, member.node_id, "POST", f"/api/v1/member/environments/{env_id}/stop",
            f"stopping {env_id} on {member.name}", {}, timeout=60.0,
        )  # fmt: skip
        for placed in self.group.placements():
            if placed.id == env_id and placed.node_id == member.node_id:
                self.group.forget_placement(placed.key)
        return {**record, "node": member.name}

    async def logs(self, env_id: str, node: str | None, tail: int) -> str:
        member, link = self.where(env_id, node)
        answer = await self.client.member(
            link, member.node_id, "GET", f"/api/v1/member/environments/{env_id}/logs?tail={tail}",
            f"the log of {env_id} on {member.name}",
        )  # fmt: skip
        return str(answer.get("log", ""))
