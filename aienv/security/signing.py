"""Requests between paired nodes, signed with the sending node's key.

A paired node (``flows.group``) proves who it is on every request it sends to
a ``/api/v1/member/…`` route: three headers carry its node id, a time and a
nonce, and an Ed25519 signature over the request's method, path and query, the
receiving node's id, that time and nonce, and the sha256 of the body. The
receiver holds the sender's public key from the pairing and checks all of it:
a request signed for another node, altered on the way, older than
``MAX_SKEW`` seconds or seen before (the nonce) is refused. TLS (pinned) keeps
the body private; the signature makes the sender's identity part of every
request, not of the connection alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

from aienv.identity import Identity, verify

NODE = "X-Aienv-Node"
STAMP = "X-Aienv-Stamp"
SIGNATURE = "X-Aienv-Signature"
CONTEXT = b"aienv-member-v1"
MAX_SKEW = 60.0  # seconds between the sender's clock and the receiver's
REMEMBERED = 4096  # nonces kept (a window of MAX_SKEW seconds, bounded)


class BadSignature(ValueError):
    """A member request whose signature does not hold; its message says why."""


def _message(method: str, target: str, receiver: str, stamp: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    parts = (CONTEXT, method.upper().encode(), target.encode(), receiver.encode(),
             stamp.encode(), digest.encode())  # fmt: skip
    return b"\n".join(parts)


def sign(
    identity: Identity, receiver: str, method: str, target: str, body: bytes
) -> dict[str, str]:
    """The headers that prove ``identity`` sent this request (``target``: path and query)
    to the node ``receiver``."""
    stamp = f"{time.time():.3f}:{secrets.token_hex(12)}"
    signature = identity.sign(_message(method, target, receiver, stamp, body))
    return {
        NODE: identity.node_id,
        STAMP: stamp,
        SIGNATURE: base64.b64encode(signature).decode(),
    }


class Verifier:
    """Checks signed member requests for one receiving node, remembering recent nonces."""

    def __init__(self, receiver: str) -> None:
        self.receiver = receiver
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(
        self,
        public_key: bytes,
        headers: Mapping[str, str],
        method: str,
        target: str,
        body: bytes,
    ) -> None:
        """Raise ``BadSignature`` unless the headers prove the holder of ``public_key``
        sent exactly this request to this node, just now, once."""
        stamp, signed = headers.get(STAMP, ""), headers.get(SIGNATURE, "")
        when, _, nonce = stamp.partition(":")
        try:
            sent = float(when)
            signature = base64.b64decode(signed, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise BadSignature("the request's signature headers are malformed") from exc
        now = time.time()
        if abs(now - sent) > MAX_SKEW:
            raise BadSignature(
                f"the request was signed {now - sent:+.0f} s from this node's clock "
                f"(at most {MAX_SKEW:g} s apart): set both clocks right (NTP)"
            )
        if not nonce or stamp in self._seen:
            raise BadSignature("the request was sent before (a replay)")
        if not verify(public_key, signature, _message(method, target, self.receiver, stamp, body)):
            raise BadSignature("the request's signature does not match its sender's key")
        self._seen[stamp] = now
        while self._seen and (
            len(self._seen) > REMEMBERED or now - next(iter(self._seen.values())) > 2 * MAX_SKEW
        ):
            self._seen.popitem(last=False)
