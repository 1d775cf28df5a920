"""Pairing codes: a short secret one node shows and a person types on the other.

The code proves to both nodes that the same person stands behind the pairing:
the joining node sends its public key with an HMAC of it keyed by the code, and
the node that showed the code answers with an HMAC of its own key. The keys are
the nodes' identity keys (the node id derives from each), so after pairing each
node knows the other's key, and every later request between them is signed
(``signing``). The exchange runs over TLS pinned to the showing node's
certificate, so nobody on the LAN sees the proofs; a guessing node gets
``ATTEMPTS`` tries at one code in all, after which the code is void.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

DIGITS = 8
LIFETIME = 300.0  # seconds a shown code stays valid
ATTEMPTS = 5  # wrong proofs a code survives


def new_code() -> str:
    """A fresh code, shown as ``1234-5678``."""
    number = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
    return f"{number[:4]}-{number[4:]}"


def normalize(code: str) -> str:
    """What a person typed, spaces and dashes dropped; ValueError when not a code."""
    digits = "".join(ch for ch in code if ch not in " -")
    if len(digits) != DIGITS or not digits.isdigit():
        raise ValueError(f"a pairing code is {DIGITS} digits, like 1234-5678")
    return digits


def proof(code: str, role: str, sender: str, receiver: str, public_key: bytes) -> str:
    """The HMAC (keyed by the code) of what ``sender`` says to ``receiver`` in ``role``
    ("join" or "welcome"): its node id and public key."""
    key = hashlib.sha256(b"aienv-pairing-v1" + normalize(code).encode()).digest()
    message = b"\n".join((role.encode(), sender.encode(), receiver.encode(), public_key))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
