"""The full inventory against what the test itself started: a process with a known
command line, listening on a known TCP port and holding a fake model file open
(found as AI-related, with the reason); a library mapped into a process; the
masking of secrets in a container's environment; the changes between two
snapshots; the sampler's events and its bounded history in a real state store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from aienv.api.system import parse_since
from aienv.errors import InvalidInput
from aienv.state import store as store_module
from aienv.state.db import Database
from aienv.state.store import StateStore
from aienv.system import ai, changes, inventory, services
from aienv.system.containers import MASK, mask_args, mask_env, secret_names
from aienv.system.processes import SETTLE, ProcessTable
from aienv.system.sampler import Sampler

PORT = 47811
MARKER = "aienv-inventory-test-worker"
NO_ENGINE = "unix:///nonexistent/docker.sock"

WORKER = textwrap.dedent(
    """
    import mmap, socket, sys, time
    model = open(sys.argv[1], "rb")          # a model file held open
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[2])))
    server.listen()
    if len(sys.argv) > 4:                    # a library mapped, as the loader would
        lib = open(sys.argv[4], "rb")
        mapped = mmap.mmap(lib.fileno(), 0, prot=mmap.PROT_READ)
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(1020))
    lib = tmp_path / "libggml-test.so"
    lib.write_bytes(b"\x7fELF" + bytes(4092))
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(model), str(PORT), MARKER, str(lib)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc, model
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _store(tmp_path: Path) -> StateStore:
    return StateStore(Database(tmp_path / "state.sqlite3"))


def test_full_inventory_finds_the_started_process_with_port_and_model(
    tmp_path: Path, worker: tuple[subprocess.Popen[str], Path]
) -> None:
    proc, model = worker
    sampler = Sampler(_store(tmp_path), NO_ENGINE, 10)
    data = sampler.full(tmp_path, {"process": (True, "")})
    (row,) = [p for p in data["processes"] if p["pid"] == proc.pid]
    assert row["cmdline"][-3:-1] == [str(PORT), MARKER]
    assert row["ppid"] == os.getpid() and row["name"].startswith("python")
    assert row["user"] == psutil.Process().username()
    assert row["status"] in ("sleeping", "running")
    assert abs(row["create_time"] - psutil.Process(proc.pid).create_time()) < 0.05
    assert row["rss"] > 1024**2 and 0 < row["memory_percent"] < 100
    assert row["cpu_percent"] is None  # first sight: nothing to measure against yet
    assert {"protocol": "tcp", "address": "127.0.0.1", "port": PORT} in row["listening"]
    assert row["ai"] is True
    assert f"holds model file {model} open" in row["ai_reasons"]
    assert "loads libggml (ggml)" in row["ai_reasons"]  # the mmapped library, from maps
    workload = [w for w in data["ai_workloads"] if w.get("pid") == proc.pid]
    assert workload and workload[0]["reasons"] == row["ai_reasons"]
    # hardware and the absent engines are answers, not errors
    assert data["cpu"]["logical"] >= 1 and data["memory"]["total"] > 0
    assert data["platform"]["kernel"] == os.uname().release
    lo = next(i for i in data["interfaces"] if i["name"] == "lo")
    assert lo["counters"] is not None and lo["counters"]["bytes_sent"] >= 0
    assert data["containers"] == [] and "no Docker engine" in data["containers_reason"]
    if not services.systemd_running():
        assert data["services"] == [] and "systemd" in data["services_reason"]
    # the next scan measures CPU over the time between them
    again = sampler.table.scan()
    (row,) = [p for p in again if p["pid"] == proc.pid]
    assert row["cpu_percent"] is not None and row["cpu_percent"] >= 0
    sampler.close()
    sampler.close()  # idempotent


def test_recognise_and_model_files_on_a_live_process(
    worker: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, model = worker
    target = psutil.Process(proc.pid)
    assert ai.model_files(target) == [str(model)]
    assert f"holds model file {model} open" in ai.recognise(target)
    gone = psutil.Process(proc.pid)
    proc.kill()
    proc.wait()
    assert ai.model_files(gone) == [] and ai.recognise(gone) == []  # gone: no error


def test_recognition_rules() -> None:
    cmd = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "x"]
    assert ai.cmdline_reasons(cmd) == ["command line mentions vllm"]
    assert ai.cmdline_reasons(["/usr/bin/ollama", "serve"]) == ["command line mentions ollama"]
    assert ai.cmdline_reasons(["llama-server", "-m", "m.gguf"])[0] == (
        "command line mentions llama-server"
    )
    assert ai.cmdline_reasons(["bash", "-c", "scorched-earth --torchlight"]) == []
    libs = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so",
        "/usr/local/cuda/lib64/libcudart.so.12",
        "/venv/lib/python3.11/site-packages/vllm/_C.abi3.so",
    ]
    assert ai.library_reasons(libs) == [
        "loads libtorch (torch)",
        "loads libcudart (cuda)",
        "loads vllm extension _C.abi3.so (vllm)",
    ]
    assert ai.is_model_file("/m/Model.SafeTensors") and not ai.is_model_file("/m/notes.txt")
    # .bin is weights only by name or size: Chromium maps v8_context_snapshot.bin
    assert ai.is_model_file("/m/pytorch_model-00001-of-00002.bin")
    assert ai.is_model_file("/m/ggml-base.en.bin")
    assert not ai.is_model_file("/usr/lib/chromium/v8_context_snapshot.bin")


def test_model_files_of_the_common_loaders_are_recognised_where_they_keep_them(
    tmp_path: Path,
) -> None:
    """The Hugging Face cache and Ollama keep weights in blobs without a suffix, and the
    kernel shows the blob (the path a snapshot link resolves to): a process holding a
    model through a snapshot link is seen holding the blob, and that is a model file."""
    repo = tmp_path / "huggingface" / "hub" / "models--org--tiny-llm"
    blob = repo / "blobs" / ("ab" * 32)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"weights")
    snapshot = repo / "snapshots" / ("1" * 40) / "pytorch_model.bin"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    ollama = tmp_path / ".ollama" / "models" / "blobs" / ("sha256-" + "cd" * 32)
    ollama.parent.mkdir(parents=True)
    ollama.write_bytes(b"GGUF")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; a = open(sys.argv[1]); b = open(sys.argv[2]);"
         "print('ready', flush=True); time.sleep(60)", str(snapshot), str(ollama)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert ai.model_files(psutil.Process(holder.pid)) == [str(ollama), str(blob)]
        reasons = ai.recognise(psutil.Process(holder.pid))  # (its command line names them too)
        assert [r for r in reasons if r.startswith("holds")] == [
            f"holds model file {ollama} open (Ollama)",
            f"holds model file {blob} open (Hugging Face cache, org/tiny-llm)",
        ]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert ai.model_store(f"/c/hub/models--gpt2/blobs/{'e' * 64}") == "Hugging Face cache, gpt2"
    # small files of the cache (config, tokenizer) are stored by a 40-digit git hash
    assert not ai.is_model_file(f"/c/hub/models--gpt2/blobs/{'e' * 40}")
    assert not ai.is_model_file(f"/srv/blobs/sha256-{'e' * 64}")


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_machine_cpu_is_measured_between_readings_from_any_thread(tmp_path: Path) -> None:
    """psutil 7 keeps cpu_percent(interval=None)'s previous reading per thread: a reading
    on another worker thread than the previous one measured nothing (0.0)."""
    before = (10.0, 100.0)
    assert inventory.busy_percent(before, (35.0, 150.0)) == 50.0
    assert inventory.busy_percent(before, before) == 0.0  # no time passed
    assert inventory.busy_and_total(psutil.cpu_times())[1] > 0
    sampler = Sampler(_store(tmp_path), NO_ENGINE, 1, containers_usable=lambda: False)
    first, second = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    try:
        first.submit(sampler.sample).result()
        _busy(0.5)  # one core busy: at least 1/CPUs of the machine
        record, _ = second.submit(sampler.sample).result()
        assert record["cpu_percent"] > 0
        _busy(0.5)
        data = first.submit(sampler.full, tmp_path, {}).result()
        assert data["cpu"]["usage_percent"] > 0  # since the sampler's reading, on its thread
    finally:
        first.shutdown()
        second.shutdown()
        sampler.close()


def test_a_large_bin_file_is_weights_and_a_small_one_is_not(tmp_path: Path) -> None:
    small, large = tmp_path / "data.bin", tmp_path / "blob.bin"
    small.write_bytes(bytes(1024))
    with large.open("wb") as handle:
        handle.truncate(ai.AMBIGUOUS_MIN_SIZE)  # sparse: no disk used
    assert not ai.is_model_file(str(small)) and ai.is_model_file(str(large))
    assert {".gguf", ".ggml", ".safetensors", ".bin", ".pt"} <= ai.MODEL_SUFFIXES


def test_secrets_in_a_container_environment_are_masked() -> None:
    env = [
        "PATH=/usr/bin",
        "HF_TOKEN=hf_abc",
        "DB_PASSWORD=hunter2",
        "OPENAI_API_KEY=sk-1",
        "AWS_SECRET_ACCESS_KEY=x",
        "DATABASE_URL=postgres://app:pw0rd@db:5432/app",
        "MODEL=llama3",
        "EMPTY=",
    ]
    masked = mask_env(env)
    assert masked["PATH"] == "/usr/bin" and masked["MODEL"] == "llama3" and masked["EMPTY"] == ""
    for name in ("HF_TOKEN", "DB_PASSWORD", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert masked[name] == MASK
    assert masked["DATABASE_URL"] == f"postgres://app:{MASK}@db:5432/app"
    assert "hunter2" not in str(masked) and "pw0rd" not in str(masked)
    assert secret_names(env) == [
        "HF_TOKEN",
        "DB_PASSWORD",
        "OPENAI_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
    ]
    # command lines kept in the change log lose their secrets too
    args = ["vllm", "serve", "--api-key", "sk-9", "--token=t0k", "HF_TOKEN=hf_x", "--port", "8000",
            "--db", "postgres://u:pw0rd@h/d"]  # fmt: skip
    assert mask_args(args) == ["vllm", "serve", "--api-key", MASK, f"--token={MASK}",
                               f"HF_TOKEN={MASK}", "--port", "8000", "--db",
                               f"postgres://u:{MASK}@h/d"]  # fmt: skip
    row = {"pid": 1, "name": "vllm", "create_time": 0.0, "age": 9.0, "cmdline": args,
           "ai_reasons": []}  # fmt: skip
    assert "sk-9" not in changes.compact_process(row)["cmd"]
    assert "sk-9" not in changes.compact_process(row)["cmd"]  # the second time, as remembered
    # a command line too long to remember is masked all the same (its head is kept)
    long_row = {**row, "cmdline": [*args[:4], "x" * changes.CACHED_CMDLINE]}
    assert changes.compact_process(long_row)["cmd"].startswith(f"vllm serve --api-key {MASK}")
    # a URL whose query holds "=" is no NAME=value: its password is masked all the same
    assert mask_args(["postgres://u:mykey@h/d?ssl=1", "--url=s://a:key1@c", "next"]) == [
        f"postgres://u:{MASK}@h/d?ssl=1", f"--url=s://a:{MASK}@c", "next"
    ]  # fmt: skip


def _proc(
    pid: int, created: float, now: float, ai_reasons: list[str] | None = None
) -> dict[str, object]:
    return {
        "key": f"{pid}:{created:.2f}",
        "pid": pid,
        "name": f"p{pid}",
        "create_time": created,
        "age": now - created,
        "cmdline": [f"p{pid}", "--serve"],
        "ai_reasons": ai_reasons or [],
    }


def _container(ident: str, state: str) -> dict[str, object]:
    return {"id": ident, "name": f"c-{ident}", "image": "img:1", "state": state, "ai": False}


def test_changes_between_two_snapshots() -> None:
    t0 = 1000.0
    vllm = ["command line mentions vllm"]
    before = changes.snapshot(
        t0,
        [
            _proc(10, t0 - 500, t0),
            _proc(11, t0 - 5, t0),
            _proc(12, t0 - 3, t0),
            _proc(13, t0 - 1, t0),
            _proc(14, t0 - 0.2, t0, vllm),  # AI, but not settled: not judged yet
            _proc(15, t0 - 0.5, t0, vllm),  # nor is this one, which is gone by the next
        ],
        [_container("aaa", "running"), _container("bbb", "exited"), _container("ccc", "running")],
    )
    t1 = t0 + 10
    after = changes.snapshot(
        t1,
        [
            _proc(11, t0 - 5, t1),  # still young: not worth an event
            _proc(12, t0 - 3, t1),
            _proc(20, t1 - 2, t1, vllm),  # new and AI: at once
            _proc(21, t1 - 1, t1),  # new, short-lived, not AI: ignored
            _proc(22, t1 - 0.5, t1, vllm),  # new, AI, not settled: at the next sample
            _proc(13, t0 - 1, t1),
            _proc(14, t0 - 0.2, t1, vllm),  # settled since: started now
        ],
        [_container("aaa", "exited"), _container("bbb", "running")],
    )
    found = changes.diff(before, after, long_lived=12.0)
    brief = [(c["kind"], c["action"], c["key"]) for c in found]
    assert brief == [
        ("process", "started", "11:995.00"),  # crossed the long-lived mark
        ("process", "started", "12:997.00"),
        ("process", "started", "14:999.80"),
        ("process", "started", "20:1008.00"),
        ("process", "stopped", "10:500.00"),  # long-lived and gone
        ("container", "down", "aaa"),
        ("container", "up", "bbb"),
        ("container", "down", "ccc"),  # removed while running
    ]
    assert found[3]["ai"] and found[3]["reasons"] == ["command line mentions vllm"]
    assert changes.describe(found[3]).startswith("process p20 (pid 20) started: p20 --serve [AI:")
    assert found[-1]["state"] == "removed"
    assert changes.diff(after, after) == []  # nothing changed, nothing said


def test_sampler_records_started_and_stopped_ai_process_and_bounds_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_SYSTEM_SAMPLES", 3)
    state = _store(tmp_path)
    sampler = Sampler(state, NO_ENGINE, 1, containers_usable=lambda: False)
    sampler.record(*sampler.sample())  # the baseline: nothing "started"
    assert state.system_changes() == []
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--serve-with", "ollama"]
    )
    try:
        time.sleep(0.1)
        sampler.record(*sampler.sample())
        # not settled yet: it may still be this process between fork and exec
        assert [c for c in state.system_changes() if c["pid"] == child.pid] == []
        time.sleep(SETTLE)
        sampler.record(*sampler.sample())
    finally:
        child.kill()
        child.wait()
    sampler.record(*sampler.sample())
    sampler.record(*sampler.sample())
    recorded = [(c["action"], c["pid"]) for c in state.system_changes() if c["pid"] == child.pid]
    assert recorded == [("started", child.pid), ("stopped", child.pid)]
    messages = [e["message"] for e in state.events() if e["kind"] == "system"]
    assert any(
        f"(pid {child.pid}) started" in m and "command line mentions ollama" in m for m in messages
    )
    assert any(f"(pid {child.pid}) stopped" in m for m in messages)
    samples = state.system_samples()
    assert len(samples) == 3  # bounded
    assert samples[-1]["processes"] > 0 and samples[-1]["containers_running"] == 0
    since = (samples[-2]["ts"] + samples[-1]["ts"]) / 2  # samples may be < 1 ms apart
    assert [s["ts"] for s in state.system_samples(since)] == [samples[-1]["ts"]]


def test_process_table_never_raises_for_vanished_processes() -> None:
    table = ProcessTable()
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(5)]
    first = {p["pid"] for p in table.scan()}
    for c in children:
        c.kill()
        c.wait()
    second = {p["pid"] for p in table.scan()}
    pids = {c.pid for c in children}
    assert pids <= first and not pids & second
    assert all(k.split(":")[0] != str(c.pid) for k in table.tracked for c in children)


def test_a_process_that_execs_is_read_again_once_settled() -> None:
    """A child seen before its ``exec`` wore another command line: the table reads it
    again once it has settled, and only then may it be judged."""
    table = ProcessTable()
    script = 'sleep 0.3; m=oll; exec "$0" -c "$1" "${m}ama"'  # the marker only after exec
    child = subprocess.Popen(["sh", "-c", script, sys.executable, "import time; time.sleep(30)"])
    try:
        (young,) = [p for p in table.scan() if p["pid"] == child.pid]
        assert young["age"] < SETTLE and young["name"] == "sh" and not young["ai"]
        time.sleep(SETTLE + 0.2)
        (settled,) = [p for p in table.scan() if p["pid"] == child.pid]
        assert settled["key"] == young["key"] and settled["age"] >= SETTLE
        assert settled["cmdline"][-1] == "ollama" and settled["name"].startswith("python")
        assert settled["ai_reasons"] == ["command line mentions ollama"]
    finally:
        child.kill()
        child.wait()


def test_listening_port_is_the_one_bound() -> None:
    from aienv.system.processes import listening_pids, listening_ports

    quiet = subprocess.Popen(["sleep", "30"])
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            mine = listening_ports().get(os.getpid(), [])
            # the sampler asks about the few processes it learns of, one by one
            assert listening_pids([os.getpid(), quiet.pid, 2**22 + 1]) == {os.getpid()}
    finally:
        quiet.kill()
        quiet.wait()
    assert {"protocol": "tcp", "address": "127.0.0.1", "port": port} in mine


def test_systemd_plain_output_is_parsed() -> None:
    text = (
        "ollama.service loaded active running Ollama Service\n"
        "ssh.service    loaded active running OpenBSD Secure Shell server\n"
        "junk line\n"
    )
    units = services._parse_plain(text)
    assert [u["unit"] for u in units] == ["ollama.service", "ssh.service"]
    assert units[0]["description"] == "Ollama Service" and units[1]["sub"] == "running"


def test_since_accepts_unix_seconds_and_iso_times() -> None:
    assert parse_since("1700000000.5") == 1700000000.5
    assert parse_since("2023-11-14T22:13:20Z") == 1700000000.0
    assert parse_since(None) == 0.0
    for bad in ("yesterday", "-1", "nan"):
        with pytest.raises(InvalidInput):
            parse_since(bad)


AS_NOBODY = textwrap.dedent(
    """
    import json, os, sys
    import psutil
    from aienv.system import ai
    from aienv.system.processes import ProcessTable, listening_ports
    # imported as root: nobody may not read the checkout or its virtualenv (under /root,
    # mode 0700, say). Now become nobody for good, before anything is read.
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    with open("/proc/self/status") as status:
        caps = [line.split()[1] for line in status if line.startswith("CapEff:")][0]
    table = ProcessTable()
    table.scan()
    rows = {p["pid"]: p for p in table.scan()}
    listening_ports()
    target = psutil.Process(int(sys.argv[1]))
    print(json.dumps({"row": rows.get(int(sys.argv[1])), "models": ai.model_files(target),
                      "reasons": ai.recognise(target), "count": len(rows),
                      "ids": [*os.getresuid(), *os.getresgid(), *os.getgroups()], "caps": caps}))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run the scan as another user")
def test_processes_of_another_user_give_nulls_not_errors(
    worker: tuple[subprocess.Popen[str], Path],
) -> None:
    """Run as ``nobody``, the scan reads root's processes as far as it may, and no further.

    The child starts as root and drops to nobody itself once its modules are
    loaded, so the test runs wherever the checkout and the interpreter live
    (nobody cannot read a checkout under /root); it then has nobody's ids alone
    and no capability, as a process started as nobody."""
    proc, _ = worker
    res = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, str(proc.pid)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    assert seen["ids"] == [65534] * 6 and int(seen["caps"], 16) == 0  # nobody, no capability
    row = seen["row"]
    assert row is not None and row["user"] == "root" and row["rss"] > 0
    assert MARKER in row["cmdline"]  # command lines are world-readable
    # maps and file descriptors of root's process are not: no model, no library, no error
    assert row["ai_reasons"] == [] and seen["models"] == [] and seen["reasons"] == []
    assert seen["count"] > 1
