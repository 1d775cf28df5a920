"""A real headless Chromium (Debian's ``chromium``) inside a host's network namespace,
driven by Playwright.

Playwright talks to the browser over a pipe, so the browser can live in the
host's namespace (where ``127.0.0.1:37778`` is that host's node, and the page
has the admin role) while the test runs outside it. The launch flags keep
Chromium from calling out: no background networking, updates or sync.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright

CHROMIUM = os.environ.get("AIENV_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def need_browser() -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (install.sh --dev)")


@contextmanager
def browser_in(pw: Playwright, netns: str, workdir: Path) -> Iterator[Browser]:
    """A browser whose Chromium runs in network namespace ``netns`` (one Playwright
    driver serves every browser of a test module: its sync API allows one per thread)."""
    need_browser()
    workdir.mkdir(parents=True, exist_ok=True)
    wrapper = workdir / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter --net=/run/netns/{netns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    browser = pw.chromium.launch(executable_path=str(wrapper), args=FLAGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()
