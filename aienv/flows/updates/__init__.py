"""Versions and updates of cloned workspaces: the delta plan (``plan``), the new
archive started from the held one (``assemble``), the new folder staged beside
the old (``stage``) and the flow (``manager``)."""

from aienv.flows.updates.manager import UpdateResult, Updates
from aienv.flows.updates.offers import describe, label

__all__ = ["UpdateResult", "Updates", "describe", "label"]
