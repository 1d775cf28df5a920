"""This machine: the inventory (``GET /api/v1/system``), the sampled history and its
changes (``/api/v1/system/changes``, ``/api/v1/system/history``).

The full inventory names processes, their command lines and containers'
environments, so only an admin gets it. A peer keeps what it always had: the
machine's resources and runtimes, without host name, disks, interfaces,
processes, services or containers (it helps a peer judge where to clone).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

from aiohttp import web

from aienv.api.common import is_admin, reply
from aienv.api.keys import ABOUT, HEALTH, SAMPLER, STATE
from aienv.api.openapi import doc
from aienv.errors import InvalidInput
from aienv.system import inventory

MAX_LIMIT = 10_000
PEER_HIDDEN = ("host", "disks", "interfaces")


def parse_since(raw: str | None) -> float:
    """``since``: unix seconds or an ISO 8601 time (with offset; naive means UTC)."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(
                f"since must be unix seconds or an ISO 8601 time, not {raw!r}"
            ) from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"since must be a non-negative time, not {raw!r}")
    return value


def parse_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query parameter that must be an integer in [low, high]; 400 otherwise."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be an integer, not {raw!r}") from exc
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, not {value}")
    return value


def parse_bool(raw: str | None, name: str, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false, not {raw!r}")


@doc(query={"full": "false: the hardware alone (default true for the admin)"})
async def get_system(request: web.Request) -> web.Response:
    """``?full=false``: the hardware alone, which is cheap (the web UI's node facts)."""
    settings, health, sampler = (
        request.app[ABOUT].settings,
        request.app[HEALTH],
        request.app[SAMPLER],
    )
    full = parse_bool(request.query.get("full"), "full", True)
    if is_admin(request) and full:
        data = await asyncio.to_thread(sampler.full, settings.home, health.runtime)
        data["sampling"] = {"interval": settings.sample_interval, "samples": sampler.samples}
        return reply(data)
    data = await asyncio.to_thread(inventory.inventory, settings.home, health.runtime)
    if not is_admin(request):  # a peer sees resources and runtimes, not names and addresses
        for key in PEER_HIDDEN:
            data.pop(key, None)
    return reply(data)


@doc(query={"since": "unix seconds or an ISO 8601 time", "limit": "how many (1-10000)"})
async def get_changes(request: web.Request) -> web.Response:
    """What started and stopped on this machine (processes, services, containers)."""
    since = parse_since(request.query.get("since"))
    limit = parse_int(request.query.get("limit"), "limit", 1000, 1, MAX_LIMIT)
    state = request.app[STATE]
    return reply({"since": since, "changes": state.system_changes(since, limit)})


@doc(query={"since": "unix seconds or an ISO 8601 time", "limit": "how many (1-10000)"})
async def get_history(request: web.Request) -> web.Response:
    """The machine's sampled use over time (one sample per interval)."""
    since = parse_since(request.query.get("since"))
    limit = parse_int(request.query.get("limit"), "limit", 100, 1, MAX_LIMIT)
    state = request.app[STATE]
    return reply({"since": since, "samples": state.system_samples(since, limit)})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/system", get_system)
    router.add_get("/api/v1/system/changes", get_changes)
    router.add_get("/api/v1/system/history", get_history)
