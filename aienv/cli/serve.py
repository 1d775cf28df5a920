"""``aienv serve``: the node itself, in the foreground. Every other command is a
client of its API. Registered on the main app by ``aienv.cli.main``; the node's
modules are imported only when it runs."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aienv.cli.client import CliError

if TYPE_CHECKING:
    from aienv.config import NodeSettings


TlsOption = Annotated[
    bool | None,
    typer.Option(
        "--tls/--no-tls",
        help="Peers reach the node over TLS, pinned by the fingerprint in its signed "
        "announcement (the default; env AIENV_TLS). --no-tls: plain HTTP only, unsafe.",
    ),
]
SandboxOption = Annotated[
    bool | None,
    typer.Option(
        "--sandbox/--no-sandbox",
        help="Launch environments sandboxed (the default; env AIENV_SANDBOX): process "
        "environments in bubblewrap as an unprivileged account, containers hardened. "
        "--no-sandbox: they run as the node's user, with what it may do.",
    ),
]


OfferCpus = Annotated[
    float | None,
    typer.Option(
        help="CPUs the group's launches may use here (default: all; env AIENV_OFFER_CPUS)."
    ),
]
OfferMemory = Annotated[
    str | None,
    typer.Option(help="Memory the group's launches may use here, e.g. 16GiB (default: all free)."),
]
OfferGpus = Annotated[
    int | None, typer.Option(help="GPUs the group's launches may use here (default: all).")
]
GroupLaunch = Annotated[
    bool | None,
    typer.Option(
        "--group-launch/--no-group-launch",
        help="Whether paired nodes may launch here (default: yes).",
    ),
]


def serve(
    home: Annotated[
        Path | None, typer.Option(help="Home folder (default: platform data dir; env AIENV_HOME).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Node name (default: hostname).")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP listen address (default 0.0.0.0).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 37778).")] = None,
    discovery_port: Annotated[
        int | None, typer.Option(help="UDP announcement port (default 37777).")
    ] = None,
    interface: Annotated[
        list[str] | None,
        typer.Option(
            "--interface", "-i", help="Interface name or IPv4 address to announce on (repeatable)."
        ),
    ] = None,
    announce_interval: Annotated[
        float | None, typer.Option(help="Seconds between announcements (default 10).")
    ] = None,
    no_dnssd: Annotated[
        bool, typer.Option("--no-dnssd", help="Do not use DNS-SD (zeroconf).")
    ] = False,
    tls: TlsOption = None,
    sandbox: SandboxOption = None,
    offer_cpus: OfferCpus = None,
    offer_memory: OfferMemory = None,
    offer_gpus: OfferGpus = None,
    group_launch: GroupLaunch = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the node: discovery, the HTTP API and the environments it launches."""
    import logging

    from aienv.node import run_node

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides: dict[str, Any] = {
        "home": home,
        "name": name,
        "http_host": host,
        "http_port": port,
        "discovery_port": discovery_port,
        "interfaces": interface or None,
        "announce_interval": announce_interval,
        "dnssd": False if no_dnssd else None,
        "tls": tls,
        "sandbox": sandbox,
        "offer_cpus": offer_cpus,
        "offer_memory": offer_memory,
        "offer_gpus": offer_gpus,
        "group_launch": group_launch,
    }
    run_node(_settings(overrides))


def _settings(overrides: dict[str, Any]) -> "NodeSettings":
    """The node's settings: defaults, ``AIENV_*`` variables, then the flags given."""
    from pydantic import ValidationError

    from aienv.config import NodeSettings

    try:
        settings = NodeSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid setting: {problems}") from exc
    return settings
