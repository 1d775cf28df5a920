"""A machine that answers in another node's place over TLS, for tests.

impostor_tls.py ANNOUNCEMENT LOG

Serves the real node's signed announcement (the file ANNOUNCEMENT, fetched from
it beforehand) at ``/api/v1/node/announcement`` with a certificate of its own,
and answers every other request with 200 and an empty JSON object. Each request
it receives is written to LOG (path, and whether it carried credentials), so a
test can tell that nothing reached it beyond the announcement. Prints "ready"
once it listens on :37778.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from aiohttp import web

from aienv.security.tls import ensure_certificate

ANNOUNCEMENT = Path(sys.argv[1]).read_bytes()
LOG = Path(sys.argv[2])


async def anything(request: web.Request) -> web.Response:
    with LOG.open("a") as log:  # noqa: ASYNC230 (a test stub: tiny, rare writes)
        log.write(f"{request.path} {'auth' if 'Authorization' in request.headers else '-'}\n")
    if request.path == "/api/v1/node/announcement":
        return web.Response(body=ANNOUNCEMENT, content_type="application/octet-stream")
    return web.json_response({})


async def ready(app: web.Application) -> None:
    print("ready", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="impostor-") as folder:
        cert = ensure_certificate(Path(folder), "impostor")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", anything)
        app.on_startup.append(ready)
        web.run_app(app, port=37778, ssl_context=cert.server_context(), print=None)


if __name__ == "__main__":
    main()
