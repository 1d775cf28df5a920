"""Archives: packing a workspace into a ZIP (deterministic, content-addressed by
sha256, cached) and extracting a received ZIP safely into a quarantine folder."""

from aienv.archive.extract import safe_extract
from aienv.archive.pack import PackResult, fingerprint, pack_workspace

__all__ = ["PackResult", "fingerprint", "pack_workspace", "safe_extract"]
