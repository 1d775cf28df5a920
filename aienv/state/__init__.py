"""State: the node's single source of truth.

``db`` holds the SQLite schema and transactions; ``store`` the versioned,
persisted records (workspaces, clones, environments, manual peers, events) with
pub/sub so that discovery and the API learn about every change.
"""

from aienv.state.store import Change, StateStore

__all__ = ["Change", "StateStore"]
