"""The example workspaces in workspaces/, as a person meets them: shared on one
namespace node, run with one click on another node's page, their tool answering
through the link the page shows.

jupyterlab: sharing downloads its wheels (from a local cache here, as from an
index on a sharer with internet: scripts/test fills it); the node that clones it
has no package index at all (pip's configuration is cut off too) and builds the
virtualenv from the workspace's wheelhouse; JupyterLab's API answers with the
link's token and refuses without it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import shared_by, wait_for
from tests.lan import Host, Lan
from tests.system.test_web_ui import browser, driver, page, section, shots  # noqa: F401

pytestmark = [pytest.mark.system]

HOSTS = 2
REPO = Path(__file__).resolve().parents[2]
WHEELS = os.environ.get("AIENV_TEST_WHEELS", "")
NO_CONFIG = {"PIP_CONFIG_FILE": os.devnull}  # no index or find-links from this machine's pip


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Iterator[tuple[Host, Host]]:
    if not WHEELS or not any(Path(WHEELS).glob("jupyterlab-*.whl")):
        message = ("the example's wheels are not cached (scripts/test downloads them into "
                   ".cache/wheels before it enters the test namespace)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    a, b = lan.hosts
    a.extra_env = {**NO_CONFIG, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS}
    b.extra_env = dict(NO_CONFIG)
    a.start("alpha")
    b.start("beta")
    yield a, b
    for host in (a, b):
        host.stop()


def status(host: Host, url: str) -> int:
    res = host.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url)
    return int(res.stdout or 0)


def test_jupyterlab_is_shared_with_its_wheels_and_opens_logged_in_from_one_click(
    nodes: tuple[Host, Host],
    page: Page,  # noqa: F811 - the web UI tests' fixture
    shots: Path,  # noqa: F811
) -> None:
    a, b = nodes
    a.cli("create", "jupyterlab", "--from", str(REPO / "workspaces" / "jupyterlab"))
    started = time.monotonic()
    shared = a.cli("share", "jupyterlab", timeout=600)
    assert "wheelhouse/" in shared.stdout, shared.stdout  # said what it added
    house = a.home / "workspaces" / "jupyterlab" / "wheelhouse"
    wheels = list(house.glob("*.whl"))
    assert any(w.name.startswith("jupyterlab-4.2.5") for w in wheels) and len(wheels) > 50
    archive = json.loads(a.cli("show", "jupyterlab", "--json").stdout)["archive"]
    print(f"jupyterlab: shared in {time.monotonic() - started:.1f} s, {len(wheels)} wheels, "
          f"archive {archive['size'] / 1024**2:.1f} MiB")  # fmt: skip
    wait_for(lambda: "jupyterlab" in shared_by(b, "alpha"), 10.0, "beta sees it")

    run = page.get_by_role("button", name="Run jupyterlab from alpha", exact=True)
    expect(run).to_be_visible()
    clicked = time.monotonic()
    run.click()
    link = section(page, "Clones").get_by_role("link", name="Open lab", exact=True)
    expect(link).to_be_visible(timeout=300_000)  # download, offline venv build, Jupyter up
    answered = time.monotonic() - clicked
    print(f"jupyterlab: click to JupyterLab answering {answered:.1f} s")
    href = link.get_attribute("href") or ""
    base, _, token = href.partition("/lab?token=")
    assert token, href
    # the API answers the link's token and refuses without it, from here and from the LAN
    assert status(b, f"{base}/api/status?token={token}") == 200
    assert status(b, f"{base}/api/status") == 403
    assert status(b, f"{base}/api/status?token=guess") == 403
    # built from the workspace's wheels alone: beta has no index and no pip configuration
    log = b.cli("logs", "jupyterlab", "--tail", "2000").stdout
    assert "--no-index --find-links" in log and "wheelhouse" in log, log[-2000:]
    with page.context.expect_page() as opened:
        link.click()
    lab = opened.value
    lab.wait_for_load_state()
    expect(lab.get_by_text("weather.ipynb")).to_be_visible(timeout=60_000)  # logged in
    lab.screenshot(path=shots / "jupyterlab.png")
    lab.close()
    b.cli("stop", "jupyterlab")
