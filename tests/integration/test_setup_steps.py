"""Setup steps (docs/workspace-format.md#setup): on two namespace nodes, alpha shares
workspaces whose ``setup:`` prepares them; beta clones them and the steps run once,
before the first launch, in the launch sandbox, the variant for beta's platform
only; a changed step runs again, an unchanged one never; a failed step leaves the
workspace installed, says which step failed and why, and runs again once fixed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aienv.flows.setup import platform_words
from tests.integration.conftest import running_endpoint, shared_by, wait_for
from tests.lan import Host, Lan, admin_call

pytestmark = pytest.mark.integration

HOSTS = 2

PREPARED = """apiVersion: aienv/v1
name: prepared
setup:
  - name: build
    platforms: [plan9]
    run: "echo 'the wrong variant' > data/built.txt"
  - name: build
    platforms: [{platform}]
    run: "mkdir -p data && echo built for {platform} > data/built.txt && id -u > data/uid.txt"
  - name: count
    run:
      - sh
      - -c
      - "echo {count} >> data/runs.txt; touch {escape} || echo confined > data/confined.txt"
environments:
  - name: web
    process:
      command: ["python3", "-m", "http.server", "{{port.http}}", "--directory", "data"]
    endpoints:
      - name: http
        port: 18470
"""

BROKEN = """apiVersion: aienv/v1
name: broken
setup:
  - name: fetch
    run: "test -f model.bin || { echo 'model.bin is missing: put it there' >&2; exit 3; }"
  - name: elsewhere
    platforms: [plan9, haiku]
    run: "true"
environments:
  - name: web
    process:
      command: ["python3", "-m", "http.server", "{port.http}"]
    endpoints:
      - name: http
        port: 18471
"""


@pytest.fixture(scope="module")
def nodes(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Host]]:
    alpha, beta = lan.hosts
    alpha.start("alpha")
    beta.start("beta")
    escape = beta.home / "escaped"
    prepared = tmp_path_factory.mktemp("prepared")
    (prepared / "data").mkdir()
    (prepared / "workspace.yaml").write_text(
        PREPARED.format(platform=platform_words()[0], count="one", escape=escape)
    )
    broken = tmp_path_factory.mktemp("broken")
    (broken / "workspace.yaml").write_text(BROKEN)
    for name, folder in (("prepared", prepared), ("broken", broken)):
        alpha.cli("create", name, "--from", str(folder))
        alpha.cli("share", name)
    wait_for(lambda: {"prepared", "broken"} <= shared_by(beta, "alpha"), 5.0, "beta sees both")
    yield alpha, beta
    for host in lan.hosts:
        host.stop()


def _get(host: Host, url: str) -> str:
    res = host.run("curl", "-sf", url)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _steps(host: Host, workspace: str) -> dict[str, dict[str, str]]:
    data = json.loads(host.cli("setup", workspace, "--status", "--json").stdout)
    return {s["name"]: s for s in data["steps"]}


def test_steps_run_once_before_the_first_launch_in_the_sandbox(nodes: tuple[Host, Host]) -> None:
    _, beta = nodes
    status, shown = admin_call(beta, "GET", "/peers/alpha/workspaces/prepared")
    assert status == 200  # what setup runs is shown before anything is cloned
    assert [s["platforms"] for s in shown["workspace"]["setup"]] == [
        ["plan9"],
        [platform_words()[0]],
        [],
    ]  # type: ignore[index]
    beta.cli("clone", "alpha/prepared")
    url = running_endpoint(beta, "prepared")["url"]
    assert _get(beta, url + "built.txt").strip() == f"built for {platform_words()[0]}"
    folder = Path(json.loads(beta.cli("show", "prepared", "--json").stdout)["path"])
    assert (folder / "data/runs.txt").read_text() == "one\n"
    # in the sandbox: as its account, and unable to write the node's home
    assert int((folder / "data/uid.txt").read_text()) != os.getuid()
    assert (folder / "data/confined.txt").read_text() == "confined\n"
    assert not (beta.home / "escaped").exists()
    assert {s["state"] for s in _steps(beta, "prepared").values()} == {"done"}
    # a second launch runs nothing again
    beta.cli("stop", "prepared")
    beta.cli("launch", "prepared")
    assert (folder / "data/runs.txt").read_text() == "one\n"
    log = beta.cli("setup", "prepared", "--log").stdout
    assert "setup step build: sh -c" in log and "the wrong variant" not in log

    # a changed step runs again, the unchanged one does not
    manifest = folder / "workspace.yaml"
    manifest.write_text(manifest.read_text().replace("echo one", "echo two"))
    steps = _steps(beta, "prepared")
    assert (steps["build"]["state"], steps["count"]["state"]) == ("done", "pending")
    done = beta.cli("setup", "prepared").stdout
    assert "count" in done and "done" in done
    assert (folder / "data/runs.txt").read_text() == "one\ntwo\n"
    beta.cli("stop", "prepared")


def test_a_failed_step_leaves_the_workspace_installed_and_runs_again_once_fixed(
    nodes: tuple[Host, Host],
) -> None:
    _, beta = nodes
    res = beta.cli("clone", "alpha/broken", check=False)
    assert res.returncode != 0
    said = res.stderr + res.stdout
    assert "setup step 'fetch' of broken failed (exit code 3: model.bin is missing" in said
    assert "aienv setup broken --log" in said
    ws = json.loads(beta.cli("show", "broken", "--json").stdout)  # installed
    _, envs = admin_call(beta, "GET", "/environments")
    assert not [e for e in envs["environments"] if e["workspace"] == "broken"]  # type: ignore[index]
    steps = _steps(beta, "broken")
    assert steps["fetch"]["state"] == "failed"
    assert steps["fetch"]["detail"].startswith("exit code 3: model.bin is missing")
    assert steps["elsewhere"]["state"] == "unsupported"
    assert "model.bin is missing" in beta.cli("setup", "broken", "--log").stdout
    again = beta.cli("launch", "broken", check=False)
    assert again.returncode != 0 and "setup step 'fetch'" in again.stderr

    # fixed by hand: that step runs; the one with no variant here still stops the launch
    (Path(ws["path"]) / "model.bin").write_bytes(b"weights")
    res = beta.cli("setup", "broken", check=False)
    assert res.returncode != 0
    assert "setup step 'elsewhere' of broken cannot run here: no variant for this machine" in (
        res.stderr
    )
    assert _steps(beta, "broken")["fetch"]["state"] == "done"
