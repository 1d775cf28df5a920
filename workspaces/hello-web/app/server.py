"""hello-web: a small HTTP app used as aienv's example workspace.

GET /         a page that greets and names the workspace
GET /health   {"status": "ok", ...} as JSON
GET /data     the workspace's data file
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        greeting = os.environ.get("GREETING", "Hello")
        workspace = os.environ.get("AIENV_WORKSPACE", "hello-web")
        if self.path == "/health":
            payload = {"status": "ok", "workspace": workspace, "greeting": greeting}
            self._send(200, json.dumps(payload).encode(), "application/json")
        elif self.path == "/data":
            self._send(200, (ROOT / "data" / "greetings.txt").read_bytes(), "text/plain")
        elif self.path == "/":
            page = f"<!doctype html><title>{workspace}</title><h1>{greeting}</h1>"
            page += f"<p>workspace: {workspace}</p>"
            self._send(200, page.encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain")

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"hello-web listening on {args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
