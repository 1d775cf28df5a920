"""The web UI in a real headless Chromium, against real nodes on the namespace LAN.

The browser runs in node B's namespace and opens B's page (so it has the admin
role, as a person at that machine would). Node A shares through its own API;
the page must show it without a reload, clone it with a click, show the
progress to the end, launch it, open its endpoint and stop it. Then the error
states: a workspace that does not fit this machine, and a peer that vanishes
mid-clone. Screenshots go to ``AIENV_SCREENSHOTS`` when set (``scripts/screenshots``
writes the ones in docs/), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.integration.conftest import make_big_workspace, no_leftovers, shared_by, wait_for
from tests.integration.test_access import PASSWORD, set_password
from tests.integration.test_variables import MANIFEST, TOOL
from tests.lan import Host, Lan, admin_call
from tests.system.browser import browser_in

pytestmark = [pytest.mark.system]

HOSTS = 2

PAGE = "http://127.0.0.1:37778/"
STALL = 4  # seconds without data before B's clones fail
expect.set_options(timeout=15_000)  # two nodes and a browser share two cores


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> tuple[Host, Host]:
    a, b = lan.hosts
    b.extra_env = {"AIENV_STALL_TIMEOUT": str(STALL)}
    a.start("alpha")
    b.start("beta")
    return a, b


@pytest.fixture(scope="module")
def driver() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(
    driver: Playwright, nodes: tuple[Host, Host], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    """Chromium in node B's namespace: B's page at 127.0.0.1 has the admin role."""
    with browser_in(driver, nodes[1].ns, tmp_path_factory.mktemp("chromium")) as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error"
            and "status of 4" not in msg.text  # 4xx answers are shown to the user, not bugs
            and "ERR_CONNECTION_REFUSED" not in msg.text  # the stream retrying a stopped node
            # the engines of the system tests add and remove interfaces in the browser's
            # namespace (a person's Wi-Fi does the same): the page reconnects by itself
            and "ERR_NETWORK_CHANGED" not in msg.text
            else None
        ),
    )
    page.goto(PAGE)
    expect(page.get_by_text("Live", exact=True)).to_be_visible()
    yield page
    context.close()
    assert problems == [], "the page logged errors:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("AIENV_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def section(page: Page, title: str) -> Any:
    """A section of the view shown (a hidden view's headings have no role)."""
    return page.locator("section").filter(has=page.get_by_role("heading", name=title, exact=True))


def run(page: Page, workspace: str, peer: str = "alpha") -> None:
    """Click Run on a peer's workspace, and once more if the browser lost the request
    to its namespace's interfaces changing under it (ERR_NETWORK_CHANGED; the page then
    says the node did not answer), as a person would."""
    button = page.get_by_role("button", name=f"Run {workspace} from {peer}", exact=True)
    for _ in range(2):
        button.click()
        page.wait_for_function(
            "location.hash.startsWith('#running') || "
            "document.body.innerText.includes('The node did not answer')"
        )
        if page.url.endswith("#running"):
            return
    raise AssertionError(f"Run {workspace} from {peer} did not reach the node twice")


def view(page: Page, name: str) -> None:
    """Open one of the page's views by its tab ("Running" may carry a count)."""
    tabs = page.get_by_role("navigation", name="Views")
    tabs.get_by_role("link", name=re.compile(rf"^{re.escape(name)}\b")).click()


def share(host: Host, name: str, folder: Path | None = None) -> None:
    if folder is None:
        host.cli("create", name, "--template", "hello-web")
    else:
        host.cli("create", name, "--from", str(folder))
    host.cli("share", name)


def node_id(host: Host) -> str:
    return str(host.api("/node").json()["id"])


def test_share_appears_then_clone_launch_open_and_stop(
    nodes: tuple[Host, Host], page: Page, shots: Path
) -> None:
    a, _ = nodes
    view(page, "This node")
    expect(section(page, "This node")).to_contain_text("beta")
    page.screenshot(path=shots / "node.png", full_page=True)
    view(page, "Discover")

    share(a, "hello")  # through A's own API, while B's page is open
    run_button = page.get_by_role("button", name="Run hello from alpha", exact=True)
    expect(run_button).to_be_visible(timeout=10_000)  # no reload: the live feed told it
    network = section(page, "Discover")
    expect(network).to_contain_text("python")  # languages and tools are announced too
    # and the disk its files will take (on the card: the details are not open yet)
    expect(network).to_contain_text(re.compile(r"\(unpacked [\d.]+ \w*B\)"))
    expect(page.get_by_role("button", name="Clone hello from alpha without launching",
                            exact=True)).to_be_visible()  # fmt: skip

    page.get_by_role("button", name="Details of hello from alpha", exact=True).click()
    expect(network).to_contain_text(re.compile(r"\bfits\b"))
    # what it would run is shown before the click
    runs = "command: python3 app/server.py --port '{port.http}'"
    expect(network).to_contain_text(runs)
    page.screenshot(path=shots / "network.png", full_page=True)

    run_button.focus()
    page.keyboard.press("Enter")  # a real button: the keyboard runs it as a click does
    source = f"{node_id(a)}/hello"
    bar = page.get_by_role("progressbar", name=f"Clone {source}", exact=True)
    expect(bar).to_be_visible()  # at once, from the POST's answer
    clones = section(page, "Clones")
    # one click: downloaded, verified, installed, launched, and its link shown
    opener = clones.get_by_role("link", name="Open http", exact=True)
    expect(opener).to_be_visible(timeout=30_000)
    expect(clones).to_contain_text("running")
    assert bar.get_attribute("value") == bar.get_attribute("max")
    page.screenshot(path=shots / "clone.png", full_page=True)

    link = page.get_by_role("link", name="Open http of hello.web", exact=True)
    expect(link).to_be_visible(timeout=30_000)
    # what the launch may do, said where it runs
    expect(section(page, "Environments")).to_contain_text("sandboxed (bubblewrap), runs as")
    page.screenshot(path=shots / "environments.png", full_page=True)
    href = link.get_attribute("href")
    assert href and href.startswith("http://127.0.0.1:") and opener.get_attribute("href") == href
    with page.context.expect_page() as opened:
        opener.click()
    app = opened.value
    app.wait_for_load_state()
    expect(app.locator("body")).to_contain_text("Hello from aienv")
    app.close()

    # a terminal in the page: a shell in the environment's folder, with its variables
    page.get_by_role("button", name="Terminal of hello.web", exact=True).click()
    dialog = page.get_by_role("dialog", name="Terminal of hello.web")
    expect(dialog).to_contain_text("A shell in hello.web")
    page.keyboard.type("echo from-the-page:$AIENV_WORKSPACE:$(id -u)\n")
    screen = dialog.locator(".xterm-rows")
    expect(screen).to_contain_text(re.compile(r"from-the-page:hello:[1-9]\d*"))
    page.screenshot(path=shots / "terminal.png", full_page=False)
    page.keyboard.type("exit 7\n")
    expect(dialog).to_contain_text("Ended: the shell ended (exit code 7).")
    dialog.get_by_role("button", name="Close", exact=True).click()

    page.get_by_role("button", name="Stop hello.web", exact=True).click()
    expect(section(page, "Environments")).to_contain_text("stopped")
    expect(link).to_have_count(0)

    view(page, "Activity")
    events = section(page, "Events")
    expect(events).to_contain_text("alpha")  # the peer joining
    expect(events).to_contain_text("running")

    page.go_back()  # the views are history entries: back is the Running view again
    page.get_by_role("button", name="Clear finished clones", exact=True).click()
    expect(bar).to_have_count(0)  # the job is forgotten, the workspace it installed stays
    view(page, "My workspaces")
    expect(page.get_by_role("button", name="Launch hello", exact=True)).to_be_visible()


def test_a_tool_that_needs_a_value_asks_for_it_then_opens_logged_in(
    nodes: tuple[Host, Host], page: Page, tmp_path: Path, shots: Path
) -> None:
    a, b = nodes
    folder = tmp_path / "greeter"
    folder.mkdir()
    (folder / "workspace.yaml").write_text(MANIFEST)
    (folder / "tool.py").write_text(TOOL)
    share(a, "greeter", folder)
    page.get_by_role("button", name="Run greeter from alpha", exact=True).click()
    clones = section(page, "Clones")
    field = clones.get_by_label("GREETING", exact=True)
    expect(field).to_be_visible(timeout=30_000)  # installed; the launch waits for it
    expect(clones).to_contain_text("what the tool says to whoever logs in")
    assert field.get_attribute("type") == "password"  # a secret is not shown as it is typed
    field.fill("hello from the page")
    page.screenshot(path=shots / "variables.png", full_page=True)
    clones.get_by_role("button", name="Save and launch", exact=True).click()
    opener = clones.get_by_role("link", name="Open http", exact=True)
    expect(opener).to_be_visible(timeout=30_000)
    expect(clones).to_contain_text("(logged in)")
    href = opener.get_attribute("href") or ""
    secret = href.partition("?token=")[2]
    assert secret, href
    expect(page.locator("body")).not_to_contain_text(secret)  # in the link, not on screen
    with page.context.expect_page() as opened:
        opener.click()
    tool = opened.value
    tool.wait_for_load_state()
    expect(tool.locator("body")).to_contain_text("hello from the page (plain)")
    tool.screenshot(path=shots / "logged-in.png")
    tool.close()
    # the same port without the link's secret meets the tool's login
    plain = b.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", href.partition("?")[0])
    assert plain.stdout == "403"
    b.cli("stop", "greeter")


def test_page_resyncs_after_the_node_restarts(nodes: tuple[Host, Host], page: Page) -> None:
    a, b = nodes
    status = page.get_by_text(re.compile("^(Live|Reconnecting…)$"))
    b.stop()
    expect(status).to_have_text("Reconnecting…")
    b.start("beta")
    expect(status).to_have_text("Live", timeout=15_000)
    share(a, "after")  # a change made after the restart still reaches the page
    expect(page.get_by_role("button", name="Run after from alpha", exact=True)).to_be_visible()


def test_a_workspace_that_does_not_fit_says_why(
    nodes: tuple[Host, Host], page: Page, tmp_path: Path, shots: Path
) -> None:
    a, b = nodes
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "workspace.yaml").write_text(
        "apiVersion: aienv/v1\nname: huge\ndescription: needs more memory than any test host\n"
        "environments:\n  - name: main\n    requires: {memory: 64TiB}\n"
        "    process: {command: [python3, -c, 'import time; time.sleep(60)']}\n"
    )
    share(a, "huge", folder)
    page.get_by_role("button", name="Details of huge from alpha", exact=True).click()
    network = section(page, "Discover")
    expect(network).to_contain_text("does not fit")
    expect(network).to_contain_text("64.0 TiB of memory")  # the shortfall, named

    page.get_by_role("button", name="Run huge from alpha", exact=True).click()
    clones = section(page, "Clones")  # installed; the launch waits for the person's word
    expect(clones).to_contain_text("Installed, not launched", timeout=30_000)
    expect(clones).to_contain_text("does not fit this machine")
    expect(clones.get_by_role("button", name="Launch huge anyway", exact=True)).to_be_visible()
    view(page, "My workspaces")
    page.get_by_role("button", name="Launch huge", exact=True).click()
    alert = section(page, "My workspaces").get_by_role("alert")
    expect(alert).to_contain_text("does not fit this machine")
    expect(alert).to_contain_text("memory")
    mine = section(page, "My workspaces")
    expect(mine.get_by_role("button", name="Launch huge anyway", exact=True)).to_be_visible()
    page.screenshot(path=shots / "does-not-fit.png", full_page=True)
    status, body = admin_call(b, "GET", "/environments")
    assert status == 200
    envs = body["environments"]  # type: ignore[index]
    assert all(e["workspace"] != "huge" for e in envs), "a refused launch must record nothing"


def test_a_protected_workspace_is_cloned_with_its_password(
    nodes: tuple[Host, Host], page: Page
) -> None:
    """The card says a password is needed; a wrong one fails the clone saying so and
    leaves nothing; the right one, typed in the page, installs it."""
    a, b = nodes
    share(a, "vault")
    set_password(a, "workspace-password", "set", "vault")
    network = section(page, "Discover")
    expect(network).to_contain_text("Password required")  # from the announcement, live
    field = page.get_by_label("Password for vault", exact=True)
    clone = page.get_by_role("button", name="Clone vault from alpha without launching", exact=True)
    field.fill("not the password")
    clone.click()
    expect(network).to_contain_text("Clone started")  # Clone only stays in Discover
    view(page, "Running")
    alert = section(page, "Clones").get_by_role("alert")
    expect(alert).to_contain_text("refused the password")
    assert not (b.home / "workspaces" / "vault").exists()
    no_leftovers(b)

    view(page, "Discover")
    field.fill(PASSWORD)
    clone.click()
    wait_for((b.home / "workspaces" / "vault").is_dir, 30, "vault installed on B")
    status, body = admin_call(b, "GET", "/workspaces/vault")
    assert status == 200 and isinstance(body, dict), body
    assert body["origin"]["kind"] == "clone"
    assert admin_call(b, "POST", "/clones/clear", {})[0] == 200  # its failed try, for the next test


def test_peer_vanishing_mid_clone_fails_with_what_to_do(
    lan: Lan, nodes: tuple[Host, Host], page: Page, tmp_path: Path, shots: Path
) -> None:
    a, b = nodes
    share(a, "big", make_big_workspace(tmp_path / "big", 48 * 1024**2))
    wait_for(lambda: "big" in shared_by(b, "alpha"), 10, "B sees big")
    lan.shape(a, "16mbit")  # about 25 s for the whole archive: time to pull the plug
    try:
        only = "Clone big from alpha without launching"
        page.get_by_role("button", name=only, exact=True).click()
        view(page, "Running")  # Clone only stays in Discover; the progress is here
        source = f"{node_id(a)}/big"
        bar = page.get_by_role("progressbar", name=f"Clone {source}", exact=True)

        def started() -> bool:
            value = bar.get_attribute("value")
            return value is not None and float(value) > 0

        wait_for(started, 20, "the download to start")
        expect(page.get_by_role("button", name=f"Cancel clone {source}")).to_be_visible()
        a.stop(signal.SIGKILL)  # the peer vanishes: no goodbye
        alert = section(page, "Clones").get_by_role("alert")
        expect(alert).to_contain_text("is the peer still up?", timeout=(STALL + 15) * 1000)
        expect(section(page, "Clones")).to_contain_text("failed")
        expect(page.get_by_role("button", name=f"Cancel clone {source}")).to_have_count(0)
        page.screenshot(path=shots / "peer-gone.png", full_page=True)
        no_leftovers(b)
    finally:
        lan.shape(a, None)
        a.start("alpha")


def test_discover_stays_readable_with_many_workspaces_and_keeps_its_place(
    nodes: tuple[Host, Host], page: Page, tmp_path: Path, shots: Path
) -> None:
    """Ten shared workspaces: a few per group until asked for all, grouped by tool, each
    saying whether it fits here; the search and grouping survive a reload, and the
    views are history entries."""
    a, _ = nodes
    for i in range(10):
        folder = tmp_path / f"many-{i}"
        folder.mkdir()
        tool, memory = ("jupyterlab", "64MiB") if i % 2 else ("code-server", "64MiB")
        if i == 9:
            memory = "64TiB"  # more than this machine has: its card says so
        (folder / "workspace.yaml").write_text(
            f"apiVersion: aienv/v1\nname: many-{i}\ntools: [{tool}]\n"
            f"description: number {i} of many, a {tool} workspace\n"
            f"environments:\n  - name: main\n    requires: {{memory: {memory}}}\n"
            "    process: {command: [python3, -c, 'pass']}\n"
        )
        share(a, f"many-{i}", folder)
    discover = section(page, "Discover")
    search = page.get_by_label("Search", exact=True)
    search.fill("many")
    expect(discover).to_contain_text("10 workspaces from 1 of 1 node match.")
    cards = discover.get_by_role("list", name="Shared by alpha").locator(":scope > li")
    expect(cards).to_have_count(8)  # the first few; the rest on request
    discover.get_by_role("button", name="Show all 10 from alpha", exact=True).click()
    expect(cards).to_have_count(10)
    expect(discover).to_contain_text("number 3 of many")  # the description travels

    page.get_by_label("Group by", exact=True).select_option("tool")
    lab = discover.get_by_role("list", name="Workspaces with jupyterlab", exact=True)
    expect(lab.locator(":scope > li")).to_have_count(5)
    expect(lab).to_contain_text("from alpha")  # grouped by tool, each card names its node

    def card(name: str) -> Any:
        return lab.locator(":scope > li").filter(
            has=page.get_by_role("heading", name=name, exact=True)
        )

    expect(card("many-9")).to_contain_text("needs 64.0 TiB")  # announced: no Details needed
    expect(card("many-1")).to_contain_text("fits here")
    page.screenshot(path=shots / "discover-by-tool.png", full_page=True)

    assert "q=many" in page.url and "group=tool" in page.url, page.url
    page.reload()
    expect(page.get_by_text("Live", exact=True)).to_be_visible()
    expect(page.get_by_label("Search", exact=True)).to_have_value("many")
    expect(page.get_by_label("Group by", exact=True)).to_have_value("tool")
    expect(lab.locator(":scope > li")).to_have_count(5)

    view(page, "This node")
    expect(page).to_have_title(re.compile(r"^This node · beta"))
    page.go_back()
    expect(section(page, "Discover")).to_be_visible()
    expect(page.get_by_label("Search", exact=True)).to_have_value("many")


def test_a_project_folder_without_workspace_yaml_is_drafted_then_created(
    page: Page, tmp_path: Path, shots: Path
) -> None:
    folder = tmp_path / "sketch"
    folder.mkdir()
    (folder / "requirements.txt").write_text("jinja2\n")
    (folder / "main.py").write_text("print('hello')\n")
    view(page, "My workspaces")
    page.get_by_text("New workspace…", exact=True).click()
    form = page.get_by_role("form", name="Create a workspace")
    form.get_by_label("Name", exact=True).fill("sketch")
    form.get_by_label("From folder", exact=True).fill(str(folder))
    form.get_by_role("button", name="Create", exact=True).click()
    drafted = page.get_by_label("The drafted workspace.yaml")
    expect(drafted).to_contain_text("runtime: venv")
    expect(page.get_by_role("list", name="Found")).to_contain_text("requirements.txt")
    expect(page.get_by_role("list", name="To check")).to_contain_text("PORT")
    page.screenshot(path=shots / "draft.png", full_page=True)
    page.get_by_role("button", name="Create sketch from this draft", exact=True).click()
    expect(page.get_by_role("button", name="Launch sketch", exact=True)).to_be_visible()
    expect(drafted).to_have_count(0)


PREPARED = """apiVersion: aienv/v1
name: prepared
setup:
  - name: weights
    run: "test -f weights.bin || { echo 'weights.bin is missing' >&2; exit 2; }"
environments:
  - name: web
    process: {command: ["python3", "-m", "http.server", "{port.http}"]}
    endpoints: [{name: http, port: 18480}]
"""


def test_setup_steps_are_shown_run_and_run_again_once_fixed(
    nodes: tuple[Host, Host], page: Page, tmp_path: Path
) -> None:
    _, beta = nodes
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "workspace.yaml").write_text(PREPARED)
    beta.cli("create", "prepared", "--from", str(folder))
    view(page, "My workspaces")
    page.get_by_role("button", name="Setup of prepared", exact=True).click()
    steps = page.get_by_role("list", name="Setup steps of prepared")
    expect(steps).to_contain_text("weights")
    expect(steps).to_contain_text("pending")
    expect(steps).to_contain_text("test -f weights.bin")  # what it runs, before it runs
    page.get_by_role("button", name="Run the setup of prepared", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text(
        "setup step 'weights' of prepared failed (exit code 2: weights.bin is missing)"
    )
    expect(steps).to_contain_text("failed")
    (beta.home / "workspaces" / "prepared" / "weights.bin").write_bytes(b"w")
    button = page.get_by_role("button", name="Run the setup of prepared", exact=True)
    button.click()
    expect(steps).to_contain_text("done")
    expect(button).to_have_count(0)
    beta.cli("delete", "prepared", "--yes")


def test_an_update_is_offered_asks_about_local_changes_and_rolls_back(
    nodes: tuple[Host, Host], page: Page, tmp_path: Path, shots: Path
) -> None:
    a, b = nodes
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: notes\nversion: 1.0.0\n")
    (folder / "notes.bin").write_bytes(b"\0first")
    share(a, "notes", folder)
    wait_for(lambda: "notes" in shared_by(b, "alpha"), 10, "beta sees notes")
    b.cli("clone", "alpha/notes", "--no-launch")
    mine = b.home / "workspaces" / "notes" / "notes.bin"
    mine.write_bytes(b"\0mine")
    shared = a.home / "workspaces" / "notes"
    (shared / "notes.bin").write_bytes(b"\0second")
    (shared / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: notes\nversion: 1.1.0\n")
    a.cli("share", "notes")

    view(page, "My workspaces")
    versions = page.get_by_label("Versions of notes")
    expect(versions).to_contain_text("update available")
    expect(versions).to_contain_text("1.0.0 (r1) → 1.1.0 (r2): 2 file(s) changed")
    page.get_by_role("button", name="Update notes", exact=True).click()
    expect(versions).to_contain_text("changed here and in the new version: notes.bin")
    page.screenshot(path=shots / "update.png", full_page=True)
    page.get_by_role("button", name="Update notes keeping my changes", exact=True).click()
    expect(versions).to_contain_text("Updated 1.0.0 (r1) → 1.1.0 (r2)")
    expect(versions).to_contain_text("notes.bin.aienv-r2")
    assert mine.read_bytes() == b"\0mine"
    assert mine.with_name("notes.bin.aienv-r2").read_bytes() == b"\0second"
    page.get_by_role("button", name="History of notes", exact=True).click()
    history = page.get_by_role("list", name="Version history of notes")
    expect(history.get_by_role("listitem")).to_have_count(2)
    expect(history.get_by_role("listitem").first).to_contain_text("1.1.0 (r2) updated")
    expect(history.get_by_role("listitem").first).to_contain_text("current")
    expect(history.get_by_role("listitem").last).to_contain_text("1.0.0 (r1) cloned")
    expect(history.get_by_role("listitem").last).to_contain_text("kept for a rollback")
    page.get_by_role("button", name="Roll back notes", exact=True).click()
    expect(versions).to_contain_text("Rolled back to 1.0.0 (r1)")
    expect(versions).to_contain_text("update available")  # offered again
    assert mine.read_bytes() == b"\0mine"


def test_pair_then_run_on_another_node_and_stop_it_there(
    nodes: tuple[Host, Host], page: Page, shots: Path
) -> None:
    a, b = nodes
    code = json.loads(a.cli("pair", "--no-wait", "--json").stdout)["code"]
    view(page, "Running")
    form = page.get_by_role("form", name="Pair with a node")
    form.get_by_label("Pair with").select_option(label=f"alpha ({a.ip})")
    form.get_by_label("the code it shows").fill(code)
    form.get_by_role("button", name="Pair").click()
    members = section(page, "Group")
    expect(members.get_by_role("button", name="Unpair alpha")).to_be_visible()
    expect(members.get_by_text("online", exact=True)).to_be_visible()
    share(b, "lab")
    view(page, "My workspaces")
    page.get_by_role("button", name="Run lab web on another node").click()
    dialog = page.get_by_role("dialog", name="Run lab web on…")
    choice = dialog.get_by_role("radio", name=re.compile("^alpha"))
    expect(choice).to_be_enabled()
    choice.check()
    page.screenshot(path=shots / "run-on.png", full_page=True)
    dialog.get_by_role("button", name="Run").click()
    expect(dialog.get_by_role("status")).to_contain_text("lab.web runs on alpha", timeout=60_000)
    link = dialog.get_by_role("link", name=f"http http://{a.ip}", exact=False)
    expect(link).to_have_attribute("href", re.compile(rf"^http://{re.escape(a.ip)}:\d+/$"))
    dialog.get_by_role("button", name="Close").click()
    view(page, "Running")
    there = page.get_by_role("list", name="Environments on other nodes of the group")
    expect(there).to_contain_text("lab.web")
    expect(there).to_contain_text("on alpha")
    there.get_by_role("button", name="Stop lab.web on alpha").click()
    expect(there.get_by_role("listitem")).to_have_count(0, timeout=30_000)
    b.cli("unpair", "alpha")
    expect(members.get_by_role("button", name="Unpair alpha")).to_have_count(0)
    for host in (a, b):
        host.cli("delete", "lab")


def test_keyboard_labels_narrow_window_and_dark_theme(
    browser: Browser, nodes: tuple[Host, Host], shots: Path
) -> None:
    def background(scheme: str, width: int) -> tuple[float, Page]:
        context = browser.new_context(
            viewport={"width": width, "height": 800},
            color_scheme=scheme,  # type: ignore[arg-type]
        )
        page = context.new_page()
        page.goto(PAGE)
        expect(page.get_by_text("Live", exact=True)).to_be_visible()
        rgb = page.evaluate("getComputedStyle(document.body).backgroundColor")
        r, g, b = (int(v) for v in re.findall(r"\d+", rgb)[:3])
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255, page

    light, light_page = background("light", 1280)
    dark, narrow = background("dark", 360)
    assert light > 0.7 and dark < 0.3, f"light theme {light:.2f}, dark theme {dark:.2f}"

    unlabeled = narrow.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
              .filter(e => e.type !== 'hidden' && !e.labels.length && !e.getAttribute('aria-label'))
              .map(e => e.outerHTML)"""
    )
    assert unlabeled == [], f"inputs without a label: {unlabeled}"
    nameless = narrow.evaluate(
        """() => [...document.querySelectorAll('button, a[href]')]
              .filter(e => !(e.getAttribute('aria-label') || e.textContent).trim())
              .map(e => e.outerHTML)"""
    )
    assert nameless == [], f"controls without a name: {nameless}"
    overflow = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"at 360 px the page scrolls sideways by {overflow} px"
    narrow.screenshot(path=shots / "narrow-dark.png")  # the top of the page, as on a phone

    # every control is reachable with Tab, each showing where the focus is
    focused = set()
    for _ in range(60):
        narrow.keyboard.press("Tab")
        focused.add(narrow.evaluate("document.activeElement && document.activeElement.outerHTML"))
    assert any('id="search"' in (f or "") for f in focused), "Tab never reached the search"
    assert any('href="#mine"' in (f or "") for f in focused), "Tab never reached the tabs"
    outline = narrow.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return s.outlineStyle + ' ' + s.outlineWidth + ' ' + s.boxShadow; })()"
    )
    assert "none 0px none" not in outline, f"the focused control shows no focus ring: {outline}"
    for p in (light_page, narrow):
        p.context.close()


def test_a_peer_browser_sees_only_what_is_shared(
    driver: Playwright, nodes: tuple[Host, Host], tmp_path: Path
) -> None:
    """From another machine the page offers no admin action, and the API refuses them."""
    a, b = nodes
    b.cli("create", "visible", "--template", "hello-web")
    b.cli("share", "visible")
    with browser_in(driver, a.ns, tmp_path / "chromium") as visitor:
        page = visitor.new_page()
        page.goto(f"{b.url}/")  # node B's page, opened from A's machine
        expect(page.get_by_text("Live", exact=True)).to_be_visible()
        shared = section(page, "Shared workspaces")
        expect(shared).to_contain_text("visible")
        expect(page.get_by_role("link", name="Download visible", exact=True)).to_be_visible()
        expect(shared).not_to_contain_text("huge")  # B's clones are not shared
        for admin_only in ("Clones", "Environments", "Events", "My workspaces"):
            expect(page.get_by_role("heading", name=admin_only, exact=True)).to_be_hidden()
        expect(page.get_by_role("button", name=re.compile("^(Run|Clone|Launch|Delete|Share) "))
               ).to_have_count(0)  # fmt: skip
        b.cli("unshare", "visible")  # the visitor's page follows the live feed too
        expect(shared).not_to_contain_text("visible")
    r = httpx.get(f"{b.url}/api/v1/node", timeout=5)
    assert r.json()["admin"] is False
    r = httpx.get(f"{b.url}/", timeout=5)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    r = httpx.post(f"{b.url}/api/v1/clones", json={"source": "alpha/hello"}, timeout=5)
    assert r.status_code == 403
    names = {w["name"] for w in httpx.get(f"{b.url}/api/v1/workspaces", timeout=5).json()[
        "workspaces"]}  # fmt: skip
    assert "hello" not in names  # B's clone of hello is not shared
