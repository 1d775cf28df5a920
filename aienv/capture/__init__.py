"""Capture: a workspace made from a running process or container, so a peer can run
its twin; or drafted from a project folder's own files (``project``).

``read_process`` and ``read_container`` read the workload; the package decides
what the workspace holds (``process.draft_process``, ``container.draft_container``: pure
but for file sizes, on the common ``draft.Draft``), leaves out what may be
secret (``filter``), and ``install`` writes it into a staging folder and
installs it through the store, all or nothing. See docs/workspace-format.md, "Captured workspaces".
A Jupyter server's twin (``jupyter``) logs its user in with a token its node makes,
never the original's.

What is left out is said, never silent: environment variables that look like
secrets and secret values on the command line (their names are listed for the
user to fill; the command says ``{env.NAME}`` in their place), machine-specific
variables (``DISPLAY``, ``SSH_*``…), files and folders that may hold secrets
(``.env``, keys, ``.ssh/``…), a home folder, folders and files over the copy
limit or that cannot be read (referenced, or mounted empty), symbolic links
and special files (a workspace holds neither).
"""

from __future__ import annotations

from aienv.capture.draft import DEFAULT_COPY_LIMIT
from aienv.capture.install import (
    capture_container,
    capture_process,
    create_drafted,
    draft_folder,
    manifest_text,
)

__all__ = [
    "DEFAULT_COPY_LIMIT",
    "capture_container",
    "capture_process",
    "create_drafted",
    "draft_folder",
    "manifest_text",
]
