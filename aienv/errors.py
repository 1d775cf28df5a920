"""One error tree for the whole node.

Every error a person may see is an ``AienvError``: it carries a stable ``code``
(for scripts and the API), an HTTP ``status`` the API answers with, and a
message that says what to do. Library errors are mapped into this tree where
they are caught, with ``raise ... from exc``.
"""

from __future__ import annotations

import math
from typing import Any


class AienvError(Exception):
    """Base of every error aienv reports to a person."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def details(self) -> dict[str, Any]:
        """Fields the API adds beside ``error`` (a refused plan, say); none by default."""
        return {}

    def headers(self) -> dict[str, str]:
        """HTTP headers the API adds to the error answer; none by default."""
        return {}


class InvalidInput(AienvError):
    code = "invalid_input"
    status = 400


class TooLarge(AienvError):
    code = "body_too_large"
    status = 413


class NotFound(AienvError):
    code = "not_found"
    status = 404


class Conflict(AienvError):
    code = "conflict"
    status = 409


class Cancelled(AienvError):
    code = "cancelled"
    status = 409


class Busy(AienvError):
    """The node is at its limit for this kind of work; the client should retry later."""

    code = "busy"
    status = 503

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class Forbidden(AienvError):
    code = "forbidden"
    status = 403


class WorkspaceError(AienvError):
    code = "workspace_invalid"
    status = 422


class DiscoveryError(AienvError):
    code = "discovery_error"
    status = 502


class PeerUnreachable(DiscoveryError):
    code = "peer_unreachable"
    status = 502


class PeerImpostor(PeerUnreachable):
    """The node at a peer's address could not prove it is that peer (its TLS
    certificate is not the one the peer's signed announcement names)."""

    code = "peer_impostor"
    status = 502


class PeerRefused(AienvError):
    """A peer answered but will not let this node in: a password, a lockout, its allow-list."""

    code = "peer_refused"
    status = 502


class TransferError(AienvError):
    code = "transfer_failed"
    status = 502


class NotOnPeer(TransferError):
    """A peer answered 404: it does not (or no longer) share or hold what was asked."""

    code = "not_on_peer"
    status = 502


class RangeNotHeld(TransferError):
    """A peer does not have that part of an archive yet (it is still downloading it)."""

    code = "range_not_held"
    status = 409


class IntegrityError(TransferError):
    code = "integrity_error"
    status = 502


class UnsafeArchive(TransferError):
    code = "unsafe_archive"
    status = 422


class DiskFull(AienvError):
    code = "disk_full"
    status = 507


class InvalidTransition(Conflict):
    """A state machine was asked to move where its table does not go: a bug, or two
    actions racing on one record (say a stop during a launch)."""

    code = "invalid_transition"


class RuntimeFailure(AienvError):
    code = "runtime_failed"
    status = 500
