"""The wheelhouse: the wheels of a venv environment's requirements, put into the
workspace when it is shared, so that a node with no package index builds the venv
offline from them (as ``aienv share`` carries a container's image).

On share, ``pip download`` on the sharing node (from its index, or whatever
``PIP_INDEX_URL`` / ``PIP_FIND_LINKS`` point pip at) fills ``wheelhouse/`` of the
workspace, once per version of the requirements file (``.requirements.sha256``
holds its digest). Wheels only: nothing is built, so no package's setup code runs
on the sharing node (a package published only as source is named as unavailable,
unless the workspace's author built its wheel into ``wheelhouse/``: pip finds it
there, as the llm-chat example's llama-cpp-python).
A launch that finds ``wheelhouse/`` installs from it alone
(``--no-index --find-links``). The wheels are those for the sharer's Python and
platform, which a LAN of like machines shares; a receiver on another Python
version is told by pip which requirement has no wheel for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
from pathlib import Path

from aienv.errors import RuntimeFailure

WHEELHOUSE = "wheelhouse"
STAMP = ".requirements.sha256"
#: pip's words for a requirement it found nowhere
UNAVAILABLE = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the "
    r"requirement) ([^\s(]+)"
)


class WheelhouseFailed(RuntimeFailure):
    """The wheels of the requirements could not be downloaded for sharing."""

    code = "wheelhouse_failed"
    status = 502


class RequirementUnavailable(WheelhouseFailed):
    code = "requirement_unavailable"
    status = 422


def offline_args(root: Path) -> tuple[str, ...]:
    """What ``pip install`` adds when the workspace carries its wheels."""
    house = root / WHEELHOUSE
    return ("--no-index", "--find-links", str(house)) if house.is_dir() else ()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def fill(requirements: Path, root: Path) -> list[str]:
    """Download the wheels ``requirements`` names into ``root/wheelhouse``; the paths
    written (none when it already holds this version's). Raises naming a requirement
    pip found nowhere."""
    house = root / WHEELHOUSE
    digest = await asyncio.to_thread(_digest, requirements)
    stamp = house / STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return []
    house.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
        "--progress-bar", "off", "--only-binary=:all:", "--dest", str(house),
        "--find-links", str(house),  # a wheel its author built (no index has one) is kept
        "--requirement", str(requirements),
        cwd=root, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await proc.communicate())[0].decode(errors="replace")
    if proc.returncode != 0:
        missing = UNAVAILABLE.search(output)
        if missing:
            raise RequirementUnavailable(
                f"cannot carry the wheels of {requirements.name}: no index this node reaches "
                f"has a wheel of {missing[1]} (check its name and version, or give this "
                "node its index: PIP_INDEX_URL or PIP_FIND_LINKS)"
            )
        errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
        tail = " / ".join(errors[-2:] or output.strip().splitlines()[-1:])
        raise WheelhouseFailed(f"pip could not download the wheels of {requirements.name}: {tail}")
    stamp.write_text(digest + "\n")
    return [f"{WHEELHOUSE}/"]
