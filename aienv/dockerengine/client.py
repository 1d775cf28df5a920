"""The one Docker engine adapter: a lazily made client, blocking SDK calls in worker
threads, and the SDK's and the connection's errors turned into aienv's.

Used by the container runtime, the machine's inventory (its containers) and
capture. ``Engine.run`` blocks and is for worker threads; ``Engine.call`` and
``Engine.call_long`` are coroutines that put it on one. A client that cannot be
made is retried on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from aienv.errors import NotFound, RuntimeFailure

if TYPE_CHECKING:
    import docker.errors

T = TypeVar("T")

DEFAULT_ADDRESS = "unix:///var/run/docker.sock"  # what the SDK uses without DOCKER_HOST
PING_TIMEOUT = 3.0  # an engine that needs longer to answer a ping is as good as absent
CALL_TIMEOUT = 60.0  # one ordinary engine call (create, inspect, remove)
BULK_TIMEOUT = 3600.0  # a quiet spell while the engine unpacks a large image archive


def sdk() -> Any:
    """The Docker SDK, imported on first use: it and requests take ~8 MiB of a node's
    memory, which a node without an engine never needs (``connect`` probes the socket
    before it loads the SDK)."""
    import docker

    return docker


def sdk_errors() -> Any:
    """``docker.errors`` (see ``sdk``): ``except sdk_errors().NotFound`` loads it only
    when an exception reaches that clause."""
    import docker.errors

    return docker.errors


def _connection_failure(exc: BaseException) -> str | None:
    """Why the engine could not be reached, in words, if a connection failure is at the
    root of ``exc`` (the SDK nests it deeply); else None."""
    seen: set[int] = set()
    seen_items: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        seen_items.append(item)
        if isinstance(item, FileNotFoundError):
            return "its socket does not exist"
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, PermissionError):
            return "permission denied (run the node as root or join the 'docker' group)"
        if isinstance(item, TimeoutError) or type(item).__name__.endswith("Timeout"):
            return "it did not answer in time"
        todo.extend(a for a in item.args if isinstance(a, BaseException))
        todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)
    if any(isinstance(e, OSError) for e in seen_items):  # requests' errors are OSErrors
        return str(exc) or type(exc).__name__
    return None


def unreachable(address: str, exc: BaseException) -> str:
    why = _connection_failure(exc) or str(exc) or type(exc).__name__
    return f"no Docker engine at {address}: {why}; start dockerd or set AIENV_DOCKER_HOST"


def explanation(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or exc).strip()


@contextlib.contextmanager
def engine_errors(what: str, address: str) -> Iterator[None]:
    """Turn the SDK's errors (and the connection's) into aienv's, naming ``what`` failed."""
    try:
        yield
    except sdk_errors().NotFound as exc:
        raise NotFound(f"cannot {what}: {explanation(exc)}") from exc
    except sdk_errors().APIError as exc:
        raise RuntimeFailure(f"the Docker engine could not {what}: {explanation(exc)}") from exc
    except (sdk_errors().DockerException, OSError) as exc:  # requests' errors are OSErrors
        if _connection_failure(exc) is None:  # a bad argument, not a lost engine
            raise RuntimeFailure(f"cannot {what}: {exc}") from exc
        raise RuntimeFailure(f"cannot {what}: {unreachable(address, exc)}") from exc


class Engine:
    """A Docker engine behind one door. ``run`` is for worker threads; ``call`` and
    ``call_long`` put it on one. A client that cannot be made is retried on the next call."""

    def __init__(self, host: str | None) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._client: Any = None  # ordinary calls
        self._bulk: Any = None  # streams: image load and save, waits, logs

    @property
    def address(self) -> str:
        return self.host or os.environ.get("DOCKER_HOST") or DEFAULT_ADDRESS

    def connect(self, timeout: float | None, version: str | None = None, pool: int = 10) -> Any:
        """A new client; without ``version`` it asks the engine (so this reaches it).
        ``pool``: connections kept; each running container holds two (its wait, its logs)."""
        if self.address.startswith("unix://"):
            # try the socket first: the SDK leaks its socket when the connection fails,
            # and a node without an engine need not load the SDK to find that out
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect(self.address.removeprefix("unix://"))
        options = {"timeout": timeout, "version": version, "max_pool_size": pool}
        if self.host is None:
            return sdk().from_env(**options)
        return sdk().DockerClient(base_url=self.host, **options)

    def client(self, bulk: bool = False) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.connect(CALL_TIMEOUT)
            if bulk and self._bulk is None:
                self._bulk = self.connect(BULK_TIMEOUT, self._client.api.api_version, pool=64)
            return self._bulk if bulk else self._client

    def run(self, what: str, fn: Callable[[Any], T], *, bulk: bool = False) -> T:
        """``fn(client)`` here and now, with errors mapped (blocks: not on the loop)."""
        with engine_errors(what, self.address):
            return fn(self.client(bulk))

    async def call(self, what: str, fn: Callable[[Any], T], *, bulk: bool = False) -> T:
        """``run`` on a worker thread."""
        return await asyncio.to_thread(self.run, what, fn, bulk=bulk)

    async def call_long(self, what: str, fn: Callable[[Any], T]) -> T:
        """Like ``call`` on a thread of its own, for a call that lasts as long as a
        container (the shared worker pool is small). Cancelling leaves the thread to
        finish when the call returns."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(setter: Callable[[Any], None], value: Any) -> None:
            if not future.done():  # the waiter may have been cancelled
                setter(value)

        def work() -> None:
            try:
                result = self.run(what, fn, bulk=True)
            except BaseException as exc:
                outcome: tuple[Callable[[Any], None], Any] = (future.set_exception, exc)
            else:
                outcome = (future.set_result, result)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, *outcome)

        threading.Thread(target=work, name=f"aienv-docker-{what}", daemon=True).start()
        return await future

    def close(self) -> None:
        with self._lock:
            for client in (self._client, self._bulk):
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            self._client = self._bulk = None

    def ping(self) -> tuple[bool, str]:
        """Whether the engine answers now (blocks up to ``PING_TIMEOUT``), and why not."""
        try:
            client = self.connect(PING_TIMEOUT)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # whatever the SDK raises, this answers and does not raise
            return False, unreachable(self.address, exc)
        return True, ""

    async def call_ping(self) -> tuple[bool, str]:
        """``ping`` on a worker thread."""
        return await asyncio.to_thread(self.ping)
