"""The one HTTP client to other nodes.

Every request this node makes to a peer — its signed announcement, a
workspace's details, an archive's piece list and bitfield, byte ranges of an
archive — goes through ``PeerClient``: one session, one place for the TLS pin
(``Link``), credentials, timeouts, refused redirects, size limits, and the
mapping of HTTP answers and connection failures to ``AienvError``s.
"""

from aienv.peer.client import PeerClient
from aienv.peer.link import Link, describe, http_base, split_host_port

__all__ = ["Link", "PeerClient", "describe", "http_base", "split_host_port"]
