"""Access control pieces, pure and testable alone: password hashing, the lockout of
addresses that keep failing to log in, and the LAN-only address allow-list. The
API's access middleware (``aienv/api/access.py``) puts them together."""
