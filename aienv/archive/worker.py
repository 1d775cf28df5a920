"""Extraction in a process of its own, for a clone that extracts while it downloads.

The node's event loop receives the archive, checks its pieces and writes them; the
extraction inflates and writes thousands of files at the same time. In one process
both share one interpreter lock: the threads extracting slow the loop receiving, and
the download ends later. A child process (this module's ``main``) opens
the same archive with the same ``Extraction`` (every check on the central directory
runs there again, on the bytes it reads itself) and extracts the entries it is told
to, on a few threads of its own, while the parent keeps the download.

The two speak in JSON lines. The parent sends the archive to open, then lists of
entry numbers (their order in ``Extraction.entries``) whose bytes are all verified;
the child answers each line with the bytes written, or with what went wrong: an
unsafe archive, or an error of the operating system (its errno, so a full disk is
told as one). The parent kills the child if the clone ends early, and removes the
target folder itself, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aienv.archive.extract import WORKERS, Extraction, shares
from aienv.errors import DiskFull, TransferError, UnsafeArchive

EXIT_WAIT = 5.0  # seconds a child that was told to stop may take to end by itself
LIMIT = 1024 * 1024  # an answer line is short; a longer one is not from this child
BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "import aienv.archive.worker as w; w.main()"
)


class ExtractionProcess:
    """The child, seen from the parent: start it, open the archive, extract batches."""

    def __init__(self, proc: asyncio.subprocess.Process, target: Path) -> None:
        self._proc = proc
        self._target = target

    @classmethod
    async def start(cls, target: Path) -> ExtractionProcess:
        # the child gets this process's import path (as multiprocessing's spawn does),
        # so it runs this very copy of aienv
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BOOT,
            json.dumps(sys.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LIMIT,
        )
        return cls(proc, target)

    async def open(self, archive: Path, max_total: int) -> None:
        """Open ``archive`` for extraction into the target (checked there again)."""
        await self._ask({"archive": str(archive), "target": str(self._target), "max": max_total})

    async def extract(self, numbers: Sequence[int]) -> int:
        """Extract the entries with these numbers; the bytes written."""
        return await self._ask(list(numbers))

    async def _ask(self, request: Any) -> int:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            await stdin.drain()
            answer = json.loads(await stdout.readline() or b"null")  # (b"": it ended)
        except (ConnectionError, ValueError) as exc:  # (ValueError: not a line of JSON)
            raise self._ended() from exc
        if not isinstance(answer, dict):
            raise self._ended()
        if "written" in answer:
            return int(answer["written"])
        if "unsafe" in answer:
            raise UnsafeArchive(str(answer["unsafe"]))
        code, reason = answer.get("os") or (None, "no reason given")
        if code == errno.ENOSPC:
            raise DiskFull(f"the disk filled up while extracting into {self._target}")
        raise TransferError(f"cannot extract into {self._target}: {reason}")

    def _ended(self) -> TransferError:
        return TransferError(
            f"the extraction process (pid {self._proc.pid}) ended unexpectedly: "
            "see the node's log, then clone again"
        )

    async def close(self, *, done: bool) -> None:
        """End the child: once it has read the end of its input if the extraction is
        ``done``, else at once (a clone cancelled or failed, the target removed next)."""
        if self._proc.returncode is None:
            if done and self._proc.stdin is not None:
                self._proc.stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._proc.wait()), EXIT_WAIT)
            if self._proc.returncode is None:
                self._proc.kill()
        await self._proc.wait()


def _answer(
    extraction: Extraction | None, request: Any, pool: ThreadPoolExecutor
) -> tuple[Extraction | None, dict[str, Any]]:
    """What the child does for one line: open the archive (a dict) or extract entries."""
    if isinstance(request, dict):
        if extraction is not None:
            extraction.close()
        opened = Extraction(Path(request["archive"]), Path(request["target"]), request["max"])
        return opened, {"written": 0}
    assert extraction is not None, "entries asked for before the archive was opened"
    infos = [extraction.entries[n] for n in request]
    jobs = [pool.submit(extraction.extract_all, batch) for batch in shares(infos)]
    return extraction, {"written": sum(job.result() for job in jobs)}


def main() -> None:
    """The child: answer each line of standard input until it ends."""
    extraction: Extraction | None = None
    with ThreadPoolExecutor(WORKERS, "extract") as pool:
        for line in sys.stdin:
            try:
                extraction, answer = _answer(extraction, json.loads(line), pool)
            except UnsafeArchive as exc:
                answer = {"unsafe": exc.message}
            except OSError as exc:
                answer = {"os": [exc.errno, exc.strerror or str(exc)]}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    if extraction is not None:
        extraction.close()


if __name__ == "__main__":
    main()
