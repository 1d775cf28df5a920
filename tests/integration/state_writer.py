"""Changes a node's workspaces through its API as fast as it answers, for crash tests.

    state_writer.py SEED SOURCE LOG

Run inside the node's network namespace (admin requests come from loopback).
Picks create (a copy of the folder SOURCE), edit, share, unshare and delete of a
few workspace names with ``random.Random(SEED)``, and appends two lines per
request to LOG: ``> OP NAME`` as it sends it, ``< OP NAME STATUS`` when the
answer came (STATUS ``unreachable`` when none did). It stops when the node no
longer answers (the test kills the node).
"""

from __future__ import annotations

import random
import sys

import httpx

NAMES = [f"ws{i}" for i in range(5)]
OPS = ["create", "create", "edit", "edit", "share", "unshare", "delete"]


def main() -> None:
    rng = random.Random(int(sys.argv[1]))
    source, log_path = sys.argv[2], sys.argv[3]
    http = httpx.Client(base_url="http://127.0.0.1:37778/api/v1", timeout=30)
    with open(log_path, "a", buffering=1) as log:
        while True:
            op, name = rng.choice(OPS), rng.choice(NAMES)
            log.write(f"> {op} {name}\n")
            try:
                if op == "create":
                    r = http.post("/workspaces", json={"name": name, "from": source})
                elif op == "edit":
                    tags = [f"t{rng.randrange(1000)}" for _ in range(rng.randrange(4))]
                    body = {"description": "x" * rng.randrange(2000), "tags": tags}
                    r = http.patch(f"/workspaces/{name}", json=body)
                elif op == "delete":
                    r = http.delete(f"/workspaces/{name}")
                else:
                    r = http.post(f"/workspaces/{name}/{op}")
            except httpx.TransportError:
                log.write(f"< {op} {name} unreachable\n")
                return
            log.write(f"< {op} {name} {r.status_code}\n")


if __name__ == "__main__":
    main()
