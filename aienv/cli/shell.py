"""``aienv shell ENV``: a shell in a running environment, in this terminal, through the
node's WebSocket (the same one the web page's terminal uses). Registered on the main
app by ``aienv.cli.main``."""

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Annotated, Any

import typer

from aienv.cli.client import Client, CliError, credentials, node_certificate, node_url


def shell(
    environment: Annotated[str, typer.Argument(help="The environment: WORKSPACE.ENVIRONMENT.")],
) -> None:
    """A shell in a running environment: its folder, its variables, its sandbox (a
    container's: docker exec). Exit the shell to come back."""
    record = Client().get(f"/environments/{environment}")
    if record["state"] != "running":
        raise CliError(
            f"environment {environment} is {record['state']}: launch it first "
            f"(aienv launch {record['workspace']})"
        )
    code = asyncio.run(_session(environment))
    raise typer.Exit(code if isinstance(code, int) else 0)


async def _session(environment: str) -> Any:
    import aiohttp

    url = node_url().replace("http", "ws", 1) + f"/api/v1/environments/{environment}/terminal"
    headers = {}
    login = credentials()
    if login is not None:
        headers["Authorization"] = aiohttp.BasicAuth(*login).encode()
    ssl: Any = None
    if url.startswith("wss://"):
        import ssl as ssllib

        ssl = ssllib.create_default_context(cafile=str(node_certificate() or ""))
        ssl.check_hostname = False
    async with aiohttp.ClientSession(headers=headers) as session:
        try:
            ws = await session.ws_connect(url, ssl=ssl, heartbeat=30.0)
        except aiohttp.WSServerHandshakeError as exc:
            raise CliError(f"the node refused the terminal (HTTP {exc.status})") from None
        except aiohttp.ClientError as exc:
            raise CliError(f"cannot reach the node at {node_url()} ({exc})") from None
        async with ws:
            with _raw_terminal():
                return await _pump(ws)


async def _pump(ws: Any) -> Any:
    """Keys to the shell, its output here, window sizes as they change; its exit code."""
    import aiohttp

    loop = asyncio.get_running_loop()
    tty = sys.stdin.isatty()
    sending: set[asyncio.Task[None]] = set()  # kept until sent

    def send(frame: Any) -> None:
        task = loop.create_task(frame)
        sending.add(task)
        task.add_done_callback(sending.discard)

    async def resize() -> None:
        if tty:
            size = os.get_terminal_size()
            await ws.send_str(json.dumps({"resize": [size.columns, size.lines]}))

    def typed() -> None:
        data = os.read(0, 65536)
        if data:
            send(ws.send_bytes(data))
        else:  # end of input (a pipe): nothing more to send, the output goes on
            loop.remove_reader(0)

    await resize()
    loop.add_reader(0, typed)
    if tty:
        loop.add_signal_handler(signal.SIGWINCH, lambda: send(resize()))
    ended: Any = None
    try:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                os.write(1, msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                ended = json.loads(msg.data)
    finally:
        loop.remove_reader(0)
    if ended and ended.get("reason") and not ended["reason"].startswith("the shell ended"):
        sys.stderr.write(f"\r\naienv: {ended['reason']}\r\n")
    return (ended or {}).get("exit")


@contextlib.contextmanager
def _raw_terminal() -> Any:
    """This terminal in raw mode (every key goes to the shell) while the shell runs."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
