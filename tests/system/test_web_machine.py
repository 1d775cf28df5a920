"""The web UI's "This machine" section in a real headless Chromium: an AI process the
test starts shows up with the reason it was recognised, and its start and stop
appear among the recent changes, live (no reload)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.lan import Host, Lan, start_sampling
from tests.system.browser import browser_in

pytestmark = [pytest.mark.system]

HOSTS = 1

PAGE = "http://127.0.0.1:37778/"


@pytest.fixture(scope="module")
def node(lan: Lan) -> Host:
    return start_sampling(lan.hosts[0])


@pytest.fixture(scope="module")
def browser(node: Host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with sync_playwright() as pw, browser_in(pw, node.ns, tmp_path_factory.mktemp("chromium")) as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(PAGE + "#machine")  # an old section link opens its view
    expect(page.get_by_text("Live", exact=True)).to_be_visible()
    yield page
    context.close()
    assert errors == []


def test_ai_process_and_its_changes_show_live(page: Page, tmp_path: Path) -> None:
    section = page.locator("section#machine")
    expect(section).to_contain_text("processes")
    expect(section).to_contain_text("no containers (no Docker engine")
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--backend", "vllm"]
    )
    try:
        workloads = section.locator("#machine-workloads")
        expect(workloads).to_contain_text(f"pid {worker.pid}")
        expect(workloads).to_contain_text("command line mentions vllm")
        changes = section.locator("#machine-changes")
        expect(changes.locator("li").filter(has_text=f"pid {worker.pid}")).to_contain_text(
            "process started"
        )
        if os.environ.get("AIENV_SCREENSHOTS"):  # docs/screenshots, as test_web_ui.py does
            section.screenshot(path=Path(os.environ["AIENV_SCREENSHOTS"]) / "machine.png")
    finally:
        worker.kill()
        worker.wait()
    stopped = (
        changes.locator("li")
        .filter(has_text=f"pid {worker.pid}")
        .filter(has_text="process stopped")
    )
    expect(stopped).to_have_count(1)
    expect(section.locator("#machine-workloads")).not_to_contain_text(f"pid {worker.pid}")
