"""What a launch is given beyond its workspace: the values this node holds for the
environment's variables (docs/workspace-format.md#variables), and a fresh secret for
each endpoint whose tool logs a person in, with the links that carry it.
"""

from __future__ import annotations

import os
import secrets
from typing import Any
from urllib.parse import urlencode

from aienv.errors import AienvError
from aienv.runtime.record import EndpointUrl
from aienv.workspace.manifest import Environment, Variable


class VariablesNeeded(AienvError):
    """A launch needs values this node does not hold; ``variables`` says which."""

    code = "variable_missing"
    status = 422

    def __init__(self, workspace: str, env: Environment, missing: list[Variable]) -> None:
        names = ", ".join(v.name for v in missing)
        what = "the variable" if len(missing) == 1 else "the variables"
        first = missing[0].name
        super().__init__(
            f"environment {workspace}.{env.name} needs {what} {names}, which this node does "
            f"not hold: give it with `aienv env set {workspace} {first}` (or --env "
            f"{first}=VALUE when launching or cloning, or the form on the web page)"
        )
        self.workspace = workspace
        self.missing = missing

    def details(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "variables": [
                {"name": v.name, "description": v.description, "secret": v.secret}
                for v in self.missing
            ],
        }


def missing(env: Environment, held: dict[str, str]) -> list[Variable]:
    """The variables ``env`` needs that neither this node (``held``) nor the node's own
    environment gives."""
    return [v for v in env.needed_variables() if v.name not in held and v.name not in os.environ]


def launch_values(workspace: str, env: Environment, held: dict[str, str]) -> dict[str, str]:
    """The variables a launch of ``env`` gets: declared defaults, then what this node
    holds; raises ``VariablesNeeded`` naming what is missing."""
    lacking = missing(env, held)
    if lacking:
        raise VariablesNeeded(workspace, env, lacking)
    defaults = {v.name: v.default for v in env.variables if v.default is not None}
    return {**defaults, **held}


def login_tokens(env: Environment) -> dict[str, str]:
    """A fresh secret for each endpoint that logs a person in, by its variable."""
    return {e.auth.token: secrets.token_urlsafe(24) for e in env.endpoints if e.auth is not None}


def endpoint_urls(
    env: Environment, ports: dict[str, int], lan_address: str | None, tokens: dict[str, str]
) -> list[EndpointUrl]:
    """Where each endpoint answers from here and from the LAN; for a tool that logs a
    person in, the link from here carries its secret (``login_url``), for this node's
    own user only."""
    out = []
    for ep in env.endpoints:
        port = ports[ep.name]
        here = f"127.0.0.1:{port}"
        lan = f"{lan_address}:{port}" if lan_address else None
        if ep.protocol != "tcp":
            here = f"{ep.protocol}://{here}{ep.path}"
            lan = f"{ep.protocol}://{lan}{ep.path}" if lan else None
        login = None
        if ep.auth is not None and ep.auth.query and ep.protocol != "tcp":
            login = f"{here}?{urlencode({ep.auth.query: tokens[ep.auth.token]})}"
        out.append(EndpointUrl(ep.name, ep.protocol, port, here, lan, login))
    return out
