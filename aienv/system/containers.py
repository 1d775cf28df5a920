"""Docker containers on the node's engine, with secrets masked in their environment.

The engine is the one the container runtime uses (``NodeSettings.docker_host``,
else ``DOCKER_HOST``, else the default socket), reached through the same
``Engine`` class. No engine is a normal answer: an empty list and the reason.
Listing is one API call (what the sampler does); the full inventory inspects
each container once more for its environment and mounts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

from aienv.dockerengine import Engine, unreachable
from aienv.system import ai

TIMEOUT = 5.0
MASK = "***"
# an environment variable whose name says it holds a secret keeps only its name
SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSW|PWD|PASSPHRASE|KEY|CREDENTIAL|AUTH|PRIVATE|CERT|COOKIE|SESSION|SALT|DSN",
    re.IGNORECASE,
)
URL_PASSWORD = re.compile(r"(?P<head>://[^/:@\s]+:)(?P<password>[^/@\s]+)@")  # s://user:pw@host
AI_ENV_HINTS = ("HF_", "HUGGING", "OLLAMA", "VLLM", "TRANSFORMERS", "TORCH", "CUDA", "NVIDIA_")
NAMED = re.compile(r"-{1,2}[A-Za-z][\w.-]*|[A-Za-z_]\w*")  # an option, a variable
# what stands in a secret's place, from what names it (an option, a variable) and its value
Hide = Callable[[str, str], str]


def _mask(_where: str, _value: str) -> str:
    return MASK


def hide_url_passwords(value: str, where: str = "", hide: Hide = _mask) -> str:
    """``value`` with the password of each URL in it (``scheme://user:PASSWORD@host``)
    replaced by ``hide("WHERE-password", password)`` (``url-password`` without ``where``)."""
    name = f"{where or 'url'}-password"
    return URL_PASSWORD.sub(lambda m: m["head"] + hide(name, m["password"]) + "@", value)


#: values no secret ever is, whatever names them (``--max-tokens 512``, ``USE_AUTH=true``)
HARMLESS = re.compile(r"-?\d+(\.\d+)?|true|false|yes|no|on|off|none|null|", re.IGNORECASE)


def harmless(value: str) -> bool:
    return HARMLESS.fullmatch(value.strip()) is not None


def mask_value(name: str, value: str) -> str:
    """The value to show for an environment variable: masked if it may be a secret."""
    if SECRET_NAME.search(name) and not harmless(value):
        return MASK
    return hide_url_passwords(value)


def mask_args(args: list[str], hide: Hide = _mask) -> list[str]:
    """A command line with the values of secret-looking options and variables masked:
    ``--api-key X``, ``--token=X``, ``HF_TOKEN=X``, a URL's password (for what the node
    keeps in its logs). ``hide`` says what replaces a value (a capture puts a reference
    to a variable there); it is given the option or variable that names the secret."""
    out: list[str] = []
    option = ""  # a secret-looking option whose value comes next
    for i, arg in enumerate(args):
        if option and not arg.startswith("--"):  # (a flag's next option is no value)
            out.append(arg if harmless(arg) else hide(option, arg))
            option = ""
            continue
        option = ""
        name, sep, value = arg.partition("=")
        named = bool(sep) and NAMED.fullmatch(name) is not None  # not a URL's query, say
        if named and SECRET_NAME.search(name) and not harmless(value):
            out.append(f"{name}={hide(name, value)}")
        elif not sep and arg.startswith("-") and SECRET_NAME.search(arg):
            out.append(arg)
            option = arg
        else:
            before = args[i - 1] if i else ""
            option_before = before.startswith("-") and NAMED.fullmatch(before) is not None
            where = name if named else before if option_before else ""
            out.append(hide_url_passwords(arg, where, hide))
    return out


def mask_env(env: list[str] | None) -> dict[str, str]:
    """``["K=V", ...]`` as a dict with secret values masked."""
    out: dict[str, str] = {}
    for item in env or []:
        name, _, value = item.partition("=")
        out[name] = mask_value(name, value)
    return out


def secret_names(env: list[str] | None) -> list[str]:
    """Names of the variables whose values were masked (for a person to fill in)."""
    return [i.partition("=")[0] for i in env or [] if SECRET_NAME.search(i.partition("=")[0])]


def _ports(raw: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for p in raw or []:
        out.append(
            {
                "container_port": p.get("PrivatePort"),
                "protocol": p.get("Type", "tcp"),
                "host_ip": p.get("IP"),
                "host_port": p.get("PublicPort"),
            }
        )
    return sorted(out, key=lambda p: (p["container_port"] or 0, p["host_port"] or 0))


def _mounts(raw: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {
            "type": m.get("Type"),
            "source": m.get("Source") or m.get("Name"),
            "destination": m.get("Destination"),
            "read_only": not m.get("RW", True),
        }
        for m in raw or []
    ]


def ai_reasons(summary: dict[str, Any], env: list[str] | None, gpus: bool) -> list[str]:
    """Why a container is AI-related: its image, command, environment or GPU request."""
    reasons = ai.text_reasons(str(summary.get("Image", "")), "image")
    reasons += ai.text_reasons(str(summary.get("Command", "")), "command")
    hinted = [n for n in (i.partition("=")[0] for i in env or []) if n.startswith(AI_ENV_HINTS)]
    if hinted:
        reasons.append(f"environment sets {', '.join(sorted(hinted)[:4])}")
    if gpus:
        reasons.append("requests GPUs")
    return reasons


def _wants_gpus(inspected: dict[str, Any]) -> bool:
    requests = (inspected.get("HostConfig") or {}).get("DeviceRequests") or []
    return any("gpu" in str(r.get("Capabilities", "")).lower() for r in requests)


def describe(summary: dict[str, Any], inspected: dict[str, Any] | None) -> dict[str, Any]:
    """One container from the engine's list entry (and its inspection, when read)."""
    config = (inspected or {}).get("Config") or {}
    env = config.get("Env")
    names = summary.get("Names") or []
    reasons = ai_reasons(summary, env, _wants_gpus(inspected or {}))
    return {
        "id": str(summary.get("Id", ""))[:12],
        "name": names[0].lstrip("/") if names else "",
        "image": summary.get("Image"),
        "command": summary.get("Command"),
        "created": summary.get("Created"),
        "state": summary.get("State"),
        "status": summary.get("Status"),
        "ports": _ports(summary.get("Ports")),
        "mounts": _mounts(summary.get("Mounts")),
        "labels": summary.get("Labels") or {},
        "environment": mask_env(env) if inspected is not None else None,
        "secrets": secret_names(env),
        "ai": bool(reasons),
        "ai_reasons": reasons,
    }


class Containers:
    """The node's Docker engine, asked for its containers (blocking: a worker thread)."""

    def __init__(self, docker_host: str | None) -> None:
        self.engine = Engine(docker_host)
        self._client: Any = None

    def _api(self) -> Any:
        if self._client is None:
            self._client = self.engine.connect(TIMEOUT)
        return self._client.api

    def list(self, *, inspect: bool) -> tuple[list[dict[str, Any]], str]:
        """Every container (running or not) and, when there is no engine, why."""
        try:
            api = self._api()
            summaries = api.containers(all=True)
            out = []
            for s in summaries:
                inspected = None
                if inspect:
                    try:
                        inspected = api.inspect_container(s["Id"])
                    except Exception:  # removed meanwhile: listed without details
                        inspected = None
                out.append(describe(s, inspected))
        except Exception as exc:  # whatever the SDK raises: no engine is an answer
            self.close()
            return [], unreachable(self.engine.address, exc)
        return out, ""

    def close(self) -> None:
        """Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a dead client must not raise
                client.close()
