"""The TLS pieces alone: the certificate made once and kept, the announcement's rule
that https names its fingerprint, and the request options that pin it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from aienv.discovery import codec
from aienv.discovery.link import Link
from aienv.security.tls import ensure_certificate


def test_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path / "tls", "alpha")
    assert first.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    again = ensure_certificate(tmp_path / "tls", "alpha")
    assert again.fingerprint == first.fingerprint and len(first.fingerprint) == 64
    first.server_context()  # the pair loads
    first.cert.unlink()
    assert ensure_certificate(tmp_path / "tls", "alpha").fingerprint != first.fingerprint


def test_https_without_a_fingerprint_is_invalid() -> None:
    with pytest.raises(ValidationError, match="fingerprint"):
        codec.HttpInfo(port=37778, scheme="https")
    codec.HttpInfo(port=37778, scheme="https", fingerprint="ab" * 32)


def test_link_options_pin_and_send_the_password_only_when_given() -> None:
    body = codec.Body(
        name="alpha",
        instance="0" * 16,
        seq=1,
        http=codec.HttpInfo(port=37778, scheme="https", fingerprint="ab" * 32),
    )
    link = Link.to("10.0.0.1", body, password="s3cret-enough")
    assert link.url == "https://10.0.0.1:37778"
    options = link.options()
    assert isinstance(options["ssl"], aiohttp.Fingerprint)
    assert options["headers"] == {"Authorization": "Basic YWllbnY6czNjcmV0LWVub3VnaA=="}
    plain = codec.Body(name="beta", instance="0" * 16, seq=1, http=codec.HttpInfo(port=37778))
    assert Link.to("10.0.0.2", plain).options() == {}
