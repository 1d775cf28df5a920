"""The access pieces alone: password hashes, the lockout, the LAN allow-list, Basic parsing."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from aienv.api import access
from aienv.api.access import Unauthorized, parse_basic
from aienv.security import NODE_PASSWORD, PEERS, allow
from aienv.security.allow import AllowList, parse_networks
from aienv.security.lockout import GLOBAL_FAILURES, WINDOW, Lockout
from aienv.security.passwords import check_strength, hash_password, verify_password
from aienv.state.db import Database
from aienv.state.store import StateStore


def test_password_hashes_are_salted_and_verify() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # salted
    assert "correct horse" not in first and first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", first)
    assert not verify_password("correct hors", first)
    assert not verify_password("", first)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "scrypt$1$2$3",
        "md5$a$b$c$d$e",
        "scrypt$x$8$1$AAAA$BBBB",
        "scrypt$16384$8$1$!!$??",
    ],
)
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert verify_password("anything", stored) is False


def test_weak_passwords_are_refused() -> None:
    assert check_strength("short") is not None
    assert check_strength("x" * 7) == "a password needs at least 8 characters"
    assert check_strength("x" * 8) is None
    assert check_strength("x" * 1025) is not None
    assert check_strength("x" * 1024) is None


def test_the_default_lockout_is_five_failures_in_a_minute_for_five_minutes() -> None:
    now = [0.0]
    lock = Lockout(clock=lambda: now[0])
    for _ in range(4):
        assert not lock.failed("10.0.0.9")
        now[0] += 14  # four failures in 56 s
    assert lock.failed("10.0.0.9")  # the fifth, within the minute, locks
    assert lock.retry_after("10.0.0.9") == 300
    spread = Lockout(clock=lambda: now[0])
    for _ in range(5):
        assert not spread.failed("10.0.0.8")
        now[0] += 16  # five failures over 64 s: never five within a minute


def test_lockout_after_repeated_failures_then_release() -> None:
    now = [0.0]
    lock = Lockout(failures=3, window=60, lock=300, clock=lambda: now[0])
    assert not lock.failed("10.0.0.9") and not lock.failed("10.0.0.9")
    assert lock.retry_after("10.0.0.9") == 0
    assert lock.failed("10.0.0.9")  # the third failure locks
    assert lock.retry_after("10.0.0.9") == 300
    assert lock.retry_after("10.0.0.8") == 0  # other addresses are not affected
    now[0] = 299
    assert lock.locked() == {"10.0.0.9": 1}
    now[0] = 301
    assert lock.retry_after("10.0.0.9") == 0


def test_failures_spread_over_time_or_a_success_do_not_lock() -> None:
    now = [0.0]
    lock = Lockout(failures=3, window=60, lock=300, clock=lambda: now[0])
    for _ in range(5):
        lock.failed("a")
        now[0] += 31  # only two ever fall within a minute
    assert lock.retry_after("a") == 0
    lock.failed("b")
    lock.failed("b")
    lock.succeeded("b")
    assert not lock.failed("b")


def test_lan_only_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allow, "KNOWN", 4)  # the kept answers are emptied as they go
    lan = AllowList()
    inside = ("127.0.0.1", "::1", "10.1.2.3", "172.20.0.1", "192.168.1.5", "169.254.3.4",
              "fe80::1", "fd00::5", "::ffff:192.168.1.5", "100.64.1.1")  # fmt: skip
    outside = ("8.8.8.8", "2001:db8::1", "172.32.0.1", "", None, "not-an-ip", "::ffff:8.8.8.8")
    for _ in range(2):  # asked afresh, then answered from what was kept: the same
        for address in inside:
            assert lan.allows(address), address
        for address in outside:
            assert not lan.allows(address), address
    assert 0 < len(lan._known) <= 4


def test_allow_list_replaces_the_default() -> None:
    only = AllowList(["10.77.0.0/24", "192.0.2.7"])
    assert only.allows("10.77.0.9") and only.allows("192.0.2.7")
    assert only.allows("127.0.0.1") and only.allows("::1")  # the CLI's way in always stays
    assert not only.allows("10.77.1.9") and not only.allows("192.168.1.1")
    with pytest.raises(ValueError, match="not an address or network"):
        parse_networks(["10.0.0.0/33"])


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_credentials_are_parsed_or_refused() -> None:
    assert parse_basic(None) is None
    creds = parse_basic(_basic("alice:pa:ss"))
    assert creds is not None and (creds.user, creds.password) == ("alice", "pa:ss")
    for bad in (
        "Bearer abc",
        "Basic !!!",
        _basic("no-colon"),
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    ):
        with pytest.raises(Unauthorized):
            parse_basic(bad)


def test_failures_from_many_addresses_are_an_attack_together() -> None:
    now = [1000.0]
    lockout = Lockout(clock=lambda: now[0])
    for i in range(GLOBAL_FAILURES - 1):
        lockout.failed(f"10.0.0.{i}")  # one guess each: no address is locked out
        now[0] += 0.1
    assert not lockout.under_attack() and not lockout.locked()
    lockout.failed("10.0.1.1")
    assert lockout.under_attack()
    now[0] += WINDOW
    assert not lockout.under_attack()  # the guessing stopped a minute ago


class _Transport:
    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.address, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def _guess(address: str, password: str) -> web.Request:
    token = base64.b64encode(f"x:{password}".encode()).decode()
    return make_mocked_request(
        "GET", "/api/v1/workspaces", transport=_Transport(address),
        headers={"Host": "10.0.0.1:37778", "Authorization": f"Basic {token}"},
    )  # fmt: skip


async def test_guessing_from_many_addresses_is_slowed_to_one_a_pace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty alias addresses once made 100 guesses in 5 s; during an attack new passwords
    are checked one per GLOBAL_PACE, whoever sends them."""
    monkeypatch.setattr(access, "GLOBAL_PACE", 0.3)
    state = StateStore(Database(tmp_path / "state.sqlite3"))
    state.set_credential(NODE_PASSWORD, PEERS, hash_password("the right passphrase"))
    guard = access.Access(state)
    for i in range(GLOBAL_FAILURES):
        with pytest.raises(Unauthorized):
            await guard.role(_guess(f"10.0.2.{i}", f"guess {i}"))
    started = time.monotonic()
    results = await asyncio.gather(
        *(guard.role(_guess(f"10.0.3.{i}", f"more {i}")) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, Unauthorized) for r in results)
    assert time.monotonic() - started >= 5 * 0.3  # one at a time
    assert await guard.role(_guess("10.0.4.1", "the right passphrase")) == "peer"
