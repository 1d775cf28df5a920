"""The node group's proofs (docs/federation.md): signed member requests and pairing
codes, with real Ed25519 keys and HMACs."""

from __future__ import annotations

import time

import pytest

from aienv.identity import Identity
from aienv.security import pairing, signing

BODY = b'{"workspace": "lab"}'
PATH = "/api/v1/member/plan"


def test_a_signed_request_holds_once_and_only_as_sent() -> None:
    sender, receiver = Identity.generate(), Identity.generate()
    verifier = signing.Verifier(receiver.node_id)
    headers = signing.sign(sender, receiver.node_id, "POST", PATH, BODY)
    assert headers[signing.NODE] == sender.node_id
    verifier.check(sender.public_key, headers, "POST", PATH, BODY)
    with pytest.raises(signing.BadSignature, match="replay"):
        verifier.check(sender.public_key, headers, "POST", PATH, BODY)
    fresh = signing.sign(sender, receiver.node_id, "POST", PATH, BODY)
    for method, path, body in (("POST", PATH, b"{}"), ("GET", PATH, BODY),
                               ("POST", "/api/v1/member/launch", BODY)):  # fmt: skip
        with pytest.raises(signing.BadSignature, match="does not match"):
            verifier.check(sender.public_key, fresh, method, path, body)
    # signed for another node, or by another key
    elsewhere = signing.sign(sender, Identity.generate().node_id, "POST", PATH, BODY)
    with pytest.raises(signing.BadSignature, match="does not match"):
        verifier.check(sender.public_key, elsewhere, "POST", PATH, BODY)
    with pytest.raises(signing.BadSignature, match="does not match"):
        verifier.check(Identity.generate().public_key, fresh, "POST", PATH, BODY)


def test_an_old_or_malformed_signature_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    sender, receiver = Identity.generate(), Identity.generate()
    verifier = signing.Verifier(receiver.node_id)
    now = time.time
    monkeypatch.setattr(signing.time, "time", lambda: now() - 2 * signing.MAX_SKEW)
    old = signing.sign(sender, receiver.node_id, "POST", PATH, BODY)
    monkeypatch.undo()
    with pytest.raises(signing.BadSignature, match="NTP"):
        verifier.check(sender.public_key, old, "POST", PATH, BODY)
    for stamp, signature in (("soon:abc", "AAAA"), ("", ""), ("1.0:x", "not base64!")):
        headers = {signing.STAMP: stamp, signing.SIGNATURE: signature}
        with pytest.raises(signing.BadSignature):
            verifier.check(sender.public_key, headers, "POST", PATH, BODY)


def test_pairing_proofs_need_the_same_code_and_key() -> None:
    a, b = Identity.generate(), Identity.generate()
    code = pairing.new_code()
    assert len(code) == 9 and code[4] == "-" and pairing.normalize(code).isdigit()
    proof = pairing.proof(code, "join", b.node_id, a.node_id, b.public_key)
    typed = f" {code.replace('-', ' ')} "  # as a person may type it
    assert pairing.matches(proof, pairing.proof(typed, "join", b.node_id, a.node_id, b.public_key))
    other = "0000-0000" if pairing.normalize(code) != "00000000" else "1111-1111"
    for differs in (
        pairing.proof(other, "join", b.node_id, a.node_id, b.public_key),
        pairing.proof(code, "welcome", b.node_id, a.node_id, b.public_key),
        pairing.proof(code, "join", b.node_id, a.node_id, Identity.generate().public_key),
    ):
        assert not pairing.matches(proof, differs)
    for bad in ("123", "1234-567x", "12345-67890"):
        with pytest.raises(ValueError, match="8 digits"):
            pairing.normalize(bad)
