"""Use-cases: the flows a person starts, each in its own module, the only place
that knows the order of their steps.

- ``workspaces``: create, import, edit, share, unshare and delete a workspace,
  and what the node announces of the ones it shares;
- ``clone``: a peer's workspace fetched, verified, installed and launched, as a
  persisted state machine (``clone.job``);
- ``environments``: plan, launch, watch, stop and recover environments, each a
  persisted state machine (``aienv.runtime.record``); ``snapshots`` of VMs;
- ``capture``: a running process or container turned into a workspace.

Flows call the parts below them (runtimes, transfer, discovery, workspace,
system, capture) and change ``state``; what follows a change (announcements,
caches, the live feed) subscribes to the state store instead of being called.
"""
