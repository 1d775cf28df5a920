"""aienv: share, discover, clone and launch AI development environments on a LAN.

Each machine runs a node (``aienv serve``). Nodes announce the workspaces they
share over UDP multicast, serve metadata and archives over HTTP, and launch
cloned workspaces with a runtime. The ``aienv`` command is a thin client of the
local node's HTTP API.
"""

__version__ = "0.1.0"
