"""A chat server for one small language model: a page to talk to it and an
OpenAI-compatible API (``GET /v1/models``, ``POST /v1/chat/completions``, streamed
or not), on one port, with llama.cpp (llama-cpp-python) on the CPU.

Everything but the static files needs the token in ``CHAT_TOKEN`` (the node makes
one per launch and gives its own user a link carrying it): ``/?token=...`` trades it
for a cookie and drops it from the address; API clients send
``Authorization: Bearer TOKEN``. Without ``CHAT_TOKEN`` the server makes a token and
prints the link, so a hand-started server is not open to the network either.

One request runs the model at a time (llama.cpp's context is not shared between
threads); the others wait their turn.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
import threading
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
COOKIE = "llmchat"
MAX_BODY = 256 * 1024
MAX_TOKENS = 1024
ROLES = {"system", "user", "assistant"}
LIMITS = {
    "max_tokens": (1, MAX_TOKENS), "temperature": (0.0, 2.0), "top_p": (0.0, 1.0),
    "repeat_penalty": (1.0, 2.0), "seed": (0, 2**31 - 1),
}  # fmt: skip
#: what a small model needs not to loop (greedy decoding repeats itself at 135M)
DEFAULTS = {"max_tokens": 256, "temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1}


class BadRequest(Exception):
    pass


class Model:
    """The model and the lock that keeps it to one request at a time."""

    def __init__(self, path: Path, threads: int, context: int) -> None:
        from llama_cpp import Llama  # the venv's; imported here so --help needs none

        self.name = path.stem
        self.lock = threading.Lock()
        self.llm = Llama(str(path), n_ctx=context, n_threads=threads, verbose=False)

    def complete(self, body: dict[str, Any]) -> Any:
        return self.llm.create_chat_completion(**body)


def checked(raw: bytes) -> dict[str, Any]:
    """The request's JSON, held to what this server offers."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest("each message needs a role: system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise BadRequest("each message needs its content as a string")
    out: dict[str, Any] = {
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "stream": bool(body.get("stream", False)),
    }
    for key, (low, high) in LIMITS.items():
        if key in body:
            value = body[key]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not low <= value <= high:
                raise BadRequest(f"{key} must be a number from {low:g} to {high:g}")
            out[key] = int(value) if key in ("max_tokens", "seed") else value
    return {**DEFAULTS, **out}


class Handler(BaseHTTPRequestHandler):
    server_version = "llm-chat/1.0"
    model: Model
    token: str

    # -- routing -------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/static/"):
            return self.static(url.path.removeprefix("/static/"))
        given = parse_qs(url.query).get("token", [""])[0]
        if url.path == "/" and given:
            return self.login(given)
        if not self.authorised():
            if url.path == "/":
                return self.static("login.html", HTTPStatus.UNAUTHORIZED)
            return self.error(HTTPStatus.UNAUTHORIZED, "log in with the link the node gave you")
        if url.path == "/":
            return self.static("index.html")
        if url.path == "/v1/models":
            model = {"id": self.model.name, "object": "model", "owned_by": "local"}
            return self.json(HTTPStatus.OK, {"object": "list", "data": [model]})
        self.error(HTTPStatus.NOT_FOUND, f"no such path: {url.path}")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/v1/chat/completions":
            return self.error(HTTPStatus.NOT_FOUND, "POST /v1/chat/completions is the one action")
        if not self.authorised():
            return self.error(HTTPStatus.UNAUTHORIZED, "send Authorization: Bearer TOKEN")
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            return self.error(HTTPStatus.FORBIDDEN, "a request from another site's page")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"send 1 to {MAX_BODY} bytes")
        try:
            body = checked(self.rfile.read(length))
        except BadRequest as exc:
            return self.error(HTTPStatus.BAD_REQUEST, str(exc))
        with self.model.lock:
            if body["stream"]:
                self.stream(body)
            else:
                self.json(HTTPStatus.OK, self.model.complete(body))

    # -- answers -------------------------------------------------------------------

    def authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return hmac.compare_digest(header[7:].strip(), self.token)
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        return COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value, self.token)

    def login(self, given: str) -> None:
        if not hmac.compare_digest(given, self.token):
            return self.static("login.html", HTTPStatus.UNAUTHORIZED)
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Set-Cookie", f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict")
        self.send_header("Location", "/")  # the token leaves the address bar
        self.send_header("Content-Length", "0")
        self.end_headers()

    def stream(self, body: dict[str, Any]) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()  # HTTP/1.0: the answer ends when the connection closes
        try:
            for chunk in self.model.complete(body):
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page pressed Stop: the generation ends with the connection

    def static(self, name: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        path = (STATIC / name).resolve()
        if path.parent != STATIC or not path.is_file():
            return self.error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
        data = path.read_bytes()
        self.send_response(status)
        self.send_header("Content-Type", TYPES.get(path.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(data)

    def json(self, status: HTTPStatus, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: HTTPStatus, message: str) -> None:
        self.json(status, {"error": {"message": message, "code": status.value}})

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self.address_string()} {format % args}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a GGUF model file")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--context", type=int, default=2048, help="tokens the model sees")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    if not args.model.is_file():
        parser.error(f"no model at {args.model}: run scripts/build-llm-example first")
    token = os.environ.get("CHAT_TOKEN") or secrets.token_urlsafe(24)
    started = time.monotonic()
    Handler.model = Model(args.model, args.threads, args.context)
    Handler.token = token
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"{Handler.model.name} loaded in {time.monotonic() - started:.1f} s, "
          f"{args.threads} threads; serving on port {args.port}", flush=True)  # fmt: skip
    if "CHAT_TOKEN" not in os.environ:
        print(f"open http://127.0.0.1:{args.port}/?token={token}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
