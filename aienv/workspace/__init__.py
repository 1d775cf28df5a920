"""Workspaces: the ``workspace.yaml`` format (v1, ``manifest``), reading and editing it
on disk (``manifest_file``), and the node's local store of workspaces (``store``)."""

from aienv.workspace.manifest import MANIFEST_FILE, Manifest, parse_manifest
from aienv.workspace.manifest_file import load_manifest

__all__ = ["MANIFEST_FILE", "Manifest", "load_manifest", "parse_manifest"]
