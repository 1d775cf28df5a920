"""Node settings: embedded defaults, overridable by ``AIENV_*`` variables and flags.

The node runs with no configuration at all: its home folder comes from
platformdirs (or ``AIENV_HOME`` / ``--home``), its name from the hostname.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aienv.units import parse_size

DEFAULT_HTTP_PORT = 37778
DEFAULT_DISCOVERY_PORT = 37777
DEFAULT_MULTICAST_GROUP = "239.255.77.77"
DEFAULT_ANNOUNCE_INTERVAL = 10.0


def _optional_size(value: object) -> object:
    return None if value is None or value == "" else parse_size(value)  # type: ignore[arg-type]


def default_home() -> Path:
    """``/var/lib/aienv`` for root (where the service keeps it), else the user's data folder."""
    if os.geteuid() == 0:
        return Path("/var/lib/aienv")
    return Path(platformdirs.user_data_dir("aienv", appauthor=False))


def default_node_name() -> str:
    host = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in host).strip("-_")
    return cleaned[:63] or "aienv-node"


class NodeSettings(BaseSettings):
    """Everything ``aienv serve`` can be told; each field is also ``AIENV_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="AIENV_", extra="forbid")

    home: Path = Field(default_factory=default_home)
    name: str = Field(default_factory=default_node_name)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=DEFAULT_HTTP_PORT, ge=1, le=65535)
    discovery_port: int = Field(default=DEFAULT_DISCOVERY_PORT, ge=1, le=65535)
    multicast_group: str = DEFAULT_MULTICAST_GROUP
    interfaces: list[str] = Field(default_factory=list)
    announce_interval: float = Field(default=DEFAULT_ANNOUNCE_INTERVAL, gt=0.05, le=3600)
    dnssd: bool = True
    ready_timeout: float = Field(default=60.0, gt=0)
    # transfers
    max_uploads: int = Field(default=4, ge=1, le=1024)
    max_sources: int = Field(default=8, ge=1, le=64)
    archive_cache: int = Field(default=20 * 1024**3, ge=0)
    stall_timeout: float = Field(default=60.0, gt=0)
    send_timeout: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="seconds a peer may take to take one 4 MiB slice of an archive before "
        "its upload ends and its slot goes to another (at least ~200 KiB/s)",
    )
    max_import: int = Field(
        default=64 * 1024**3, ge=1, description="largest workspace ZIP accepted by an import"
    )
    # runtimes
    docker_host: str | None = Field(
        default=None, description="the Docker engine's address; default: DOCKER_HOST or its socket"
    )
    libvirt_uri: str | None = Field(
        default=None,
        description="libvirt's URI; default qemu:///system as root, qemu:///session otherwise",
    )
    vm_accel: Literal["auto", "kvm", "tcg"] = "auto"
    cgroups: bool = Field(default=True, description="limit process environments with cgroups")
    sandbox: bool = Field(
        default=True,
        description="run process environments in a bubblewrap sandbox (docs/security.md); "
        "off, they run as the node's user and see what it sees",
    )
    sandbox_user: str = Field(
        default="aienv-sandbox",
        description="the account sandboxed environments run as when the node runs as root "
        "(install.sh creates it)",
    )
    allow_unsandboxed: bool = Field(
        default=False,
        description="let a workspace that asks for it (isolation.sandbox: false) run outside "
        "the sandbox",
    )
    pids_limit: int = Field(
        default=4096, ge=16, description="most processes one environment may have at once"
    )
    disk_reserve: Annotated[int, BeforeValidator(parse_size)] = Field(
        default=1024**3,
        ge=0,
        description="free space the node keeps on its home's file system: when it falls "
        "under this, the running environment that wrote most is stopped (0: never)",
    )
    # the node group (docs/federation.md)
    offer_cpus: float | None = Field(
        default=None,
        gt=0,
        description="CPUs the paired nodes' launches may use here together (default: all)",
    )
    offer_memory: Annotated[int | None, BeforeValidator(_optional_size)] = Field(
        default=None,
        ge=0,
        description="memory the paired nodes' launches may use here together (default: all "
        "that is free)",
    )
    offer_gpus: int | None = Field(
        default=None, ge=0, description="GPUs the paired nodes' launches may use (default: all)"
    )
    group_launch: bool = Field(
        default=True,
        description="paired nodes may launch environments on this node (within its offer)",
    )
    # this machine
    sample_interval: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="seconds between samples of this machine's processes and containers "
        "(history and change events); 0 disables sampling",
    )
    # access
    tls: bool = Field(
        default=True,
        description="peers reach this node over TLS, with a self-signed certificate they pin "
        "by the fingerprint in its signed announcement (plain HTTP stays on the same port for "
        "the node's own browser and CLI); AIENV_TLS=0 turns it off: a peer's identity is then "
        "not bound to the connection, and passwords travel in clear",
    )
    admin_group: str = Field(
        default="aienv",
        description="members of this group (besides the node's own user and root) are the "
        "node's admin from this machine; other local users are peers",
    )
    allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="networks that may talk to the node (comma-separated, e.g. 10.0.0.0/8); "
        "default: loopback, private and link-local ranges",
    )

    @field_validator("allow", mode="before")
    @classmethod
    def _split_allow(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            from aienv.security.allow import parse_networks

            parse_networks([str(v) for v in value])  # a bad network is an error at start
        return value

    @field_validator("sample_interval")
    @classmethod
    def _check_sample_interval(cls, value: float) -> float:
        if 0 < value < 0.5:
            raise ValueError("must be 0 (no sampling) or at least 0.5 seconds")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        from aienv.names import check_name

        return check_name(value, "node name")

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def archives_dir(self) -> Path:
        return self.home / "archives"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def partial_dir(self) -> Path:
        """Downloads in progress; kept across restarts so a clone resumes."""
        return self.home / "partial"

    @property
    def versions_dir(self) -> Path:
        """Per workspace: the file list of the version it holds, the version before an
        update (kept for a rollback) and an update's download in progress."""
        return self.home / "versions"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def environments_dir(self) -> Path:
        """Each environment's own files (VM overlays, generated configs), by id."""
        return self.home / "environments"

    @property
    def db_path(self) -> Path:
        return self.home / "state.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.home / "node.key"

    def make_dirs(self) -> None:
        """The home and its folders. Another account may pass through the home to the
        folders a sandboxed environment or libvirt's qemu is given (in ``workspaces``,
        ``environments``, ``logs``) but list none of them; the rest is the node's alone,
        as is each workspace folder until a launch hands it over."""
        passage = (self.home, self.workspaces_dir, self.environments_dir, self.logs_dir)
        private = (self.archives_dir, self.tmp_dir, self.partial_dir, self.versions_dir)
        for path in (*passage, *private):
            path.mkdir(parents=True, exist_ok=True)
        for path in passage:
            path.chmod(0o711)
        for path in private:
            path.chmod(0o700)
