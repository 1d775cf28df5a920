"""The typed keys under which the node hands each component to the API, one per
component (``web.AppKey``): a handler asks for exactly what it uses."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from aienv.config import NodeSettings
from aienv.discovery.service import DiscoveryService
from aienv.flows.clone import CloneManager
from aienv.flows.environments import Environments
from aienv.flows.group import Group
from aienv.flows.setup import Setup
from aienv.flows.snapshots import Snapshots
from aienv.flows.updates import Updates
from aienv.flows.workspaces import WorkspaceFlows
from aienv.identity import Identity
from aienv.peer import PeerClient
from aienv.runtime.health import Health
from aienv.security.allow import AllowList
from aienv.security.tls import Certificate
from aienv.state.store import StateStore
from aienv.system.sampler import Sampler
from aienv.transfer.holdings import Holdings
from aienv.transfer.progress import Transfers
from aienv.transfer.serve import UploadSlots
from aienv.workspace.store import WorkspaceStore


@dataclass(slots=True, frozen=True)
class About:
    """What the node is: its settings, identity, certificate, and when it started."""

    settings: NodeSettings
    identity: Identity
    certificate: Certificate | None
    started: float  # time.monotonic() at start


ABOUT = web.AppKey("about", About)
STATE = web.AppKey("state", StateStore)
ALLOW = web.AppKey("allow", AllowList)
DISCOVERY = web.AppKey("discovery", DiscoveryService)
CLIENT = web.AppKey("peer_client", PeerClient)
HEALTH = web.AppKey("health", Health)
UPLOADS = web.AppKey("uploads", UploadSlots)
TRANSFERS = web.AppKey("transfers", Transfers)
HOLDINGS = web.AppKey("holdings", Holdings)
STORE = web.AppKey("store", WorkspaceStore)
WORKSPACES = web.AppKey("workspaces", WorkspaceFlows)
ENVIRONMENTS = web.AppKey("environments", Environments)
SNAPSHOTS = web.AppKey("snapshots", Snapshots)
CLONES = web.AppKey("clones", CloneManager)
UPDATES = web.AppKey("updates", Updates)
SAMPLER = web.AppKey("sampler", Sampler)
GROUP = web.AppKey("group", Group)
SETUP = web.AppKey("setup", Setup)


@dataclass(slots=True, frozen=True)
class Parts:
    """Every component the API needs, as the node made them (``app.create_app``)."""

    about: About
    state: StateStore
    allow: AllowList
    discovery: DiscoveryService
    client: PeerClient
    health: Health
    uploads: UploadSlots
    transfers: Transfers
    holdings: Holdings
    store: WorkspaceStore
    workspaces: WorkspaceFlows
    environments: Environments
    snapshots: Snapshots
    clones: CloneManager
    updates: Updates
    sampler: Sampler
    group: Group
    setup: Setup


def install(app: web.Application, parts: Parts) -> None:
    """Put each component under its key."""
    app[ABOUT] = parts.about
    app[STATE] = parts.state
    app[ALLOW] = parts.allow
    app[DISCOVERY] = parts.discovery
    app[CLIENT] = parts.client
    app[HEALTH] = parts.health
    app[UPLOADS] = parts.uploads
    app[TRANSFERS] = parts.transfers
    app[HOLDINGS] = parts.holdings
    app[STORE] = parts.store
    app[WORKSPACES] = parts.workspaces
    app[ENVIRONMENTS] = parts.environments
    app[SNAPSHOTS] = parts.snapshots
    app[CLONES] = parts.clones
    app[UPDATES] = parts.updates
    app[SAMPLER] = parts.sampler
    app[GROUP] = parts.group
    app[SETUP] = parts.setup
