"""What a hostile workspace's environment runs (tests/integration/test_hostile.py).

Each attack is tried for real and its outcome written to ``report.json`` in the
workspace (the one place the environment may write): ``ok`` with what it got when
the attack worked, else the error it met. Then it serves HTTP, so the launch
counts as ready and the test can compare before and after.

    python3 hostile.py PORT NODE_HOME NODE_PID OTHER_WORKSPACE OTHER_PID
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPORT = Path("report.json")


def attempt(report: dict[str, object], name: str, action: object) -> None:
    try:
        got = action() if callable(action) else action
    except OSError as exc:
        report[name] = {"ok": False, "errno": errno.errorcode.get(exc.errno or 0, str(exc))}
    else:
        report[name] = {"ok": True, "got": str(got)[:200]}


def write(path: Path) -> int:
    return path.write_text("planted by a hostile workspace\n")


def node_api(method: str, path: str) -> int:
    """The status the node's API answers from here, over its loopback (as its CLI would)."""
    request = urllib.request.Request(f"http://127.0.0.1:37778{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def fork_until_refused(most: int) -> dict[str, object]:
    """Fork children that sleep until the kernel refuses one; count them; end them."""
    children: list[int] = []
    refused = ""
    while len(children) < most:
        try:
            pid = os.fork()
        except OSError as exc:
            refused = errno.errorcode.get(exc.errno or 0, str(exc))
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"forked": len(children), "refused": refused}


def fill_tmp() -> dict[str, object]:
    """Write 1 MiB blocks to /tmp until the sandbox's cap stops it."""
    written, refused = 0, ""
    block = b"\0" * 1024**2
    try:
        with open("/tmp/fill", "wb") as out:
            for _ in range(4096):  # 4 GiB at most: the cap comes long before
                out.write(block)
                out.flush()
                written += len(block)
    except OSError as exc:
        refused = errno.errorcode.get(exc.errno or 0, str(exc))
    os.unlink("/tmp/fill")
    return {"written": written, "refused": refused}


def main() -> None:
    port, home, node_pid, other, other_pid = sys.argv[1:6]
    report: dict[str, object] = {"uid": os.getuid()}
    attempt(report, "read_node_key", lambda: Path(home, "node.key").read_bytes())
    attempt(report, "read_node_state", lambda: Path(home, "state.sqlite3").read_bytes()[:16])
    attempt(report, "list_node_home", lambda: sorted(os.listdir(home)))
    attempt(report, "list_workspaces", lambda: sorted(os.listdir(Path(home, "workspaces"))))
    attempt(report, "read_other_workspace", lambda: os.listdir(other))
    attempt(report, "read_shadow", lambda: Path("/etc/shadow").read_text())
    attempt(report, "read_root_home", lambda: os.listdir("/root"))
    attempt(report, "write_etc", lambda: write(Path("/etc/aienv-hostile")))
    attempt(report, "write_usr", lambda: write(Path("/usr/aienv-hostile")))
    attempt(report, "write_node_home", lambda: write(Path(home, "planted")))
    attempt(report, "write_other_workspace", lambda: write(Path(other, "planted")))
    attempt(report, "write_own_workspace", lambda: write(Path("mine.txt")))
    attempt(report, "signal_node", lambda: os.kill(int(node_pid), signal.SIGKILL))
    attempt(report, "signal_other", lambda: os.kill(int(other_pid), signal.SIGKILL))
    attempt(report, "see_node_process", lambda: Path(f"/proc/{node_pid}/cmdline").read_bytes())
    attempt(report, "see_processes", lambda: sorted(p for p in os.listdir("/proc") if p.isdigit()))
    attempt(report, "raise_privileges", lambda: os.setuid(0))
    report["admin_read"] = node_api("GET", "/api/v1/environments")
    report["admin_delete"] = node_api("DELETE", "/api/v1/workspaces/victim")
    report["peer_read"] = node_api("GET", "/api/v1/node")
    report["fork_bomb"] = fork_until_refused(100_000)
    report["fill_tmp"] = fill_tmp()
    report["status"] = {
        line.split(":")[0]: line.split(":", 1)[1].strip()
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("CapEff", "CapBnd", "NoNewPrivs"))
    }
    REPORT.write_text(json.dumps(report, indent=1))
    server = http.server.HTTPServer(("", int(port)), http.server.SimpleHTTPRequestHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
