"""Workspaces: the ``workspace.yaml`` format (v1) and the node's local store of workspaces."""

from aienv.workspace.manifest import MANIFEST_FILE, Manifest, load_manifest, parse_manifest

__all__ = ["MANIFEST_FILE", "Manifest", "load_manifest", "parse_manifest"]
