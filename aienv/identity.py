"""The node's identity: an Ed25519 key pair; the node id is derived from the public key.

The key is created on first start and stored PEM-encoded with mode 0600. The
node id is the first 16 bytes of SHA-256 over the raw public key, in hex, so
any receiver can check that an announcement's key belongs to its id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aienv.errors import AienvError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def node_id_for(public_key: bytes) -> str:
    return hashlib.sha256(public_key).digest()[:16].hex()


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(slots=True, frozen=True)
class Identity:
    private_key: Ed25519PrivateKey
    public_key: bytes
    node_id: str

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Identity:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private_key=key, public_key=public, node_id=node_id_for(public))

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the key at ``path``, creating it (mode 0600, atomically) if absent."""
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise AienvError(
                    f"node key {path} is unreadable ({exc}); move it away to create a new identity"
                ) from exc
            if not isinstance(key, Ed25519PrivateKey):
                raise AienvError(f"node key {path} is not an Ed25519 key")
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return cls.from_private_key(key)
        identity = cls.generate()
        pem = identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return identity

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)
