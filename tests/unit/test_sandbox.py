"""The sandbox's settings, arguments and consent, without launching (the launch itself:
tests/integration/test_hostile.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from aienv.config import NodeSettings
from aienv.errors import RuntimeFailure
from aienv.runtime.ports import allocate, port_is_free, unprivileged_start
from aienv.runtime.sandbox import (
    Account,
    Sandbox,
    SandboxRefused,
    _made_parents,
    may_switch_users,
    tmp_size,
)
from aienv.runtime.vm_user import qemu_user, qemu_who
from aienv.security.owner import socket_owner
from aienv.workspace.manifest import Environment, Isolation


def sandbox(tmp_path: Path, **settings: object) -> Sandbox:
    box = Sandbox()
    box.configure(NodeSettings(home=tmp_path, **settings))  # type: ignore[arg-type]
    return box


def after(args: list[str], flag: str) -> list[list[str]]:
    """Every pair of values that follows ``flag`` in ``args``."""
    return [args[i + 1 : i + 3] for i, a in enumerate(args) if a == flag]


def test_a_workspace_leaves_the_sandbox_only_with_the_nodes_consent(tmp_path: Path) -> None:
    loose = Isolation(sandbox=False)
    with pytest.raises(SandboxRefused, match="AIENV_ALLOW_UNSANDBOXED"):
        sandbox(tmp_path).applies(loose)
    assert sandbox(tmp_path, allow_unsandboxed=True).applies(loose) is False
    assert sandbox(tmp_path).applies(Isolation()) is True
    assert sandbox(tmp_path, sandbox=False).applies(Isolation()) is False  # --no-sandbox


def test_the_wrapped_command_binds_only_its_folders_writable(tmp_path: Path) -> None:
    root, state = tmp_path / "home" / "workspaces" / "ws", tmp_path / "home" / "environments" / "e"
    account = Account("aienv-sandbox", 999, 995)
    args = sandbox(tmp_path).wrap(
        ["python3", "app.py"], cwd=root, writable=[root, state], isolation=Isolation(),
        memory=256 * 1024**2, account=account,
    )  # fmt: skip
    assert args[0] == "bwrap" and args[-2:] == ["python3", "app.py"]
    assert after(args, "--bind") == [[str(root), str(root)], [str(state), str(state)]]
    assert ["/usr", "/usr"] in after(args, "--ro-bind")
    assert not any(
        dest[1] in ("/home", "/root", "/var", "/run") for dest in after(args, "--ro-bind")
    )
    assert args[args.index("--tmpfs") - 1] == str(128 * 1024**2)  # half its memory
    assert "--unshare-pid" in args and "--unshare-net" not in args
    setpriv = args[args.index("setpriv") :]
    assert "--reuid=999" in setpriv and "--no-new-privs" in setpriv
    assert "--bounding-set=-all" in setpriv
    # the folders bwrap makes on the way to the bound ones are opened to the account
    chmods = [a[1] for a in after(args, "--chmod")]
    assert str(tmp_path / "home") in chmods and str(root) not in chmods and "/tmp" not in chmods


def test_a_node_that_is_not_root_sandboxes_in_a_user_namespace(tmp_path: Path) -> None:
    args = sandbox(tmp_path).wrap(
        ["sh"], cwd=tmp_path, writable=[tmp_path], isolation=Isolation(network="none"),
        memory=None, account=None,
    )  # fmt: skip
    assert "setpriv" not in args
    assert {"--unshare-user", "--disable-userns", "--unshare-net"} <= set(args)
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert args[args.index("--tmpfs") - 1] == str(tmp_size(None))


CAPS = "+chown,+kill,+setgid,+setuid"  # what install.sh's unit gives the service's node


def as_service_node(uid: int, gid: int, caps: str = CAPS) -> list[str]:
    """A prefix that runs a command as the service's node would run: not root, holding
    the unit's capabilities (systemd's AmbientCapabilities)."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", "--"]  # fmt: skip


def own_status(prefix: list[str]) -> str:
    """``/proc/self/status`` of a process started with ``prefix``."""
    return subprocess.run([*prefix, "cat", "/proc/self/status"], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None,
                    reason="switching accounts needs root and bubblewrap")  # fmt: skip
def test_the_service_node_runs_sandboxes_as_the_account_without_being_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = sandbox(tmp_path)
    account = box.check()
    assert account is not None
    service = pwd.getpwnam("nobody")  # stands for the service's account, aienv
    home = Path(tempfile.mkdtemp())
    try:
        home.chmod(0o711)  # as make_dirs leaves it
        workspace, state = home / "ws", home / "state"
        workspace.mkdir(mode=0o700)
        state.mkdir(mode=0o700)
        key = home / "node.key"
        key.write_text("the node's secret")
        key.chmod(0o600)
        for path in (home, workspace, state, key):
            os.chown(path, service.pw_uid, service.pw_gid)
        with_caps = as_service_node(service.pw_uid, service.pw_gid)
        without = as_service_node(service.pw_uid, service.pw_gid, "-all")
        assert may_switch_users(own_status(with_caps))
        assert not may_switch_users(own_status(without))
        Sandbox.hand_over(account, [workspace, state])
        monkeypatch.setattr(os, "geteuid", lambda: service.pw_uid)
        script = ("id -u; grep CapEff /proc/self/status; echo mine > out; "
                  f"cat {key} 2>&1 || true; ls /proc | grep -c '^[0-9]'")  # fmt: skip
        args = box.wrap(["sh", "-c", script], cwd=workspace, writable=[workspace, state],
                        isolation=Isolation(), memory=None, account=account)  # fmt: skip
        monkeypatch.undo()
        assert args[0] == "setpriv" and "--unshare-user" in args
        ran = subprocess.run([*with_caps, *args], check=False, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        uid, caps, denied, processes = ran.stdout.splitlines()
        assert int(uid) == account.uid != service.pw_uid
        assert caps.split()[1] == "0000000000000000"
        assert "No such file" in denied  # the node's home is not in its view
        assert int(processes) <= 4  # its own pid namespace: bwrap, sh, ls, grep
        assert (workspace / "out").stat().st_uid == account.uid
    finally:
        shutil.rmtree(home)


def test_a_device_the_machine_lacks_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SandboxRefused, match="/dev/nosuch0"):
        sandbox(tmp_path).wrap(["sh"], cwd=tmp_path, writable=[tmp_path],
                               isolation=Isolation(devices=["/dev/nosuch0"]), memory=None,
                               account=None)  # fmt: skip
    args = sandbox(tmp_path).wrap(["sh"], cwd=tmp_path, writable=[tmp_path],
                                  isolation=Isolation(devices=["/dev/null"]), memory=None,
                                  account=None)  # fmt: skip
    assert ["/dev/null", "/dev/null"] in after(args, "--dev-bind")


@pytest.mark.parametrize("device", ["dev/dri", "/etc/passwd", "/dev/../etc", "/dev"])
def test_a_device_outside_dev_is_not_a_valid_isolation(device: str) -> None:
    with pytest.raises(ValueError, match="device path under /dev"):
        Isolation(devices=[device])


def test_the_nodes_own_variables_stay_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIENV_PASSWORD", "secret-of-the-node")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = {**os.environ, "GREETING": "hello", "AIENV_PORT_HTTP": "8000"}
    kept = Sandbox.environ(env, Path("/w/home"))
    assert "AIENV_PASSWORD" not in kept
    assert kept["GREETING"] == "hello" and kept["AIENV_PORT_HTTP"] == "8000"
    assert kept["LC_ALL"] == "C.UTF-8" and kept["HOME"] == "/w/home" and kept["TMPDIR"] == "/tmp"
    assert kept["PATH"] == os.environ["PATH"]


def test_handing_over_changes_owners_but_never_follows_links(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing owners needs root")
    outside = tmp_path / "outside"
    outside.write_text("not the sandbox's")
    folder = tmp_path / "ws"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "file").write_text("x")
    (folder / "link").symlink_to(outside)
    (folder / "dirlink").symlink_to(tmp_path)
    Sandbox.hand_over(Account("x", 4242, 4243), [folder])
    for path in (folder, folder / "sub", folder / "sub" / "file", folder / "link"):
        assert (path.lstat().st_uid, path.lstat().st_gid) == (4242, 4243), path
    assert outside.stat().st_uid == 0 and tmp_path.stat().st_uid == 0


def test_made_parents_stop_at_the_bound_folders() -> None:
    made = _made_parents([Path("/srv/a/ws"), Path("/srv/a/ws/inner"), Path("/srv/b/state")])
    assert made == ["/srv", "/srv/a", "/srv/b"]


def test_the_plan_says_what_a_sandboxed_launch_may_do(tmp_path: Path) -> None:
    env = Environment.model_validate(
        {"name": "e", "process": {"command": ["x"]}, "isolation": {"network": "none"}}
    )
    lines = sandbox(tmp_path).describe(env.isolation, memory=None)
    assert lines[0].startswith("sandboxed (bubblewrap)")
    assert "no network" in lines[-1]
    assert "not sandboxed" in sandbox(tmp_path, sandbox=False).describe(env.isolation)[0]


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_owner_of_a_loopback_connection_is_found(family: int, host: str) -> None:
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen()
        with socket.create_connection(server.getsockname()[:2]) as client:
            accepted, peer = server.accept()
            with accepted:
                here = accepted.getsockname()[:2]
                assert socket_owner(peer[:2], here) == os.geteuid()
                assert socket_owner((host, 1), here) is None  # no such connection
                assert client.fileno() > 0


def test_an_ipv4_client_seen_through_a_dual_stack_socket_is_found() -> None:
    with socket.socket(socket.AF_INET6) as server:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind(("::", 0))
        server.listen()
        with socket.create_connection(("127.0.0.1", server.getsockname()[1])):
            accepted, peer = server.accept()
            with accepted:
                assert peer[0] == "::ffff:127.0.0.1"
                assert socket_owner(peer[:2], accepted.getsockname()[:2]) == os.geteuid()


def test_qemu_runs_as_libvirts_account_and_never_as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("a node that is not root runs qemu as itself")
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o711)
        (top / "open").mkdir(mode=0o711)
        (top / "open" / "ws").mkdir(mode=0o700)  # a workspace folder: the node's alone
        (top / "closed").mkdir(mode=0o700)
        (top / "closed" / "ws").mkdir()
        assert qemu_user(True, [top / "open" / "ws"]) is None  # libvirt's own account
        assert (top / "open" / "ws").stat().st_mode & 0o777 == 0o711  # entered, not listed
        with pytest.raises(RuntimeFailure, match=f"cannot enter {top / 'closed'},") as refused:
            qemu_user(True, [top / "open" / "ws", top / "closed" / "ws"])
        assert refused.value.code == "qemu_as_root"
        assert (top / "closed").stat().st_mode & 0o777 == 0o700  # above the VM's own: untouched
        assert qemu_user(False, [top / "closed" / "ws"]) is None  # a session libvirt
        assert "not root" in qemu_who(True, top / "open")
        assert qemu_who(True, top / "closed" / "ws").startswith("nobody: refused")
    finally:
        shutil.rmtree(top)


def test_a_privileged_port_is_planned_elsewhere_for_what_binds_without_privileges() -> None:
    lowest = unprivileged_start()
    assert 0 < lowest <= 1024
    kept = allocate([("http", 80)], set())  # the engine publishes a container's: kept
    moved = allocate([("http", 80)], set(), lowest)  # a sandboxed process or qemu: moved
    assert moved["http"] >= lowest
    assert kept["http"] == 80 or not port_is_free(80)
