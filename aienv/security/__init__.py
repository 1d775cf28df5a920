"""Access control pieces, pure and testable alone: password hashing, the lockout of
addresses that keep failing to log in, and the LAN-only address allow-list. The
API's access middleware (``aienv/api/access.py``) puts them together."""

# the kinds of credentials in the state store (each a name → scrypt hash)
ADMIN = "admin"  # admin users, by user name
NODE_PASSWORD = "node"  # the node's peer password: its one entry is PEERS
PEERS = "peers"
WORKSPACE_PASSWORD = "workspace"  # one entry per protected workspace, by name
