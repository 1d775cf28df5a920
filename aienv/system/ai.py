"""Recognising AI/LLM workloads, with the reason shown.

A process is AI-related when its command line names a known AI program or
library (vllm, ollama, llama.cpp, torchrun...), when it has an AI library
mapped (``/proc/PID/maps``: libtorch, libtensorflow, libcudart, libllama,
libggml...) or when it holds a model-weight file open. Each clue becomes a
reason a person can check (``"command line mentions vllm"``, ``"loads
libtorch (torch)"``, ``"holds model file /x/y.gguf open"``), so a verdict is
never a bare flag. Model files are known by their suffix, or by where the
common loaders keep them without one: a Hugging Face cache blob
(``…/models--ORG--NAME/blobs/SHA256``, which the snapshot links point to) and an
Ollama blob (``…/models/blobs/sha256-HEX``); the kernel shows the resolved
path, so the blob is what a process holds. Everything here is best effort and
never raises: a process we may not look into simply yields fewer reasons.

The pure functions (``cmdline_reasons``, ``library_reasons``, ``model_reasons``,
``text_reasons``) take data, so the sampler can cache what is expensive to read
(the maps) and tests can check the rules without processes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable

import psutil

from aienv.archive.policy import STORED_EXTENSIONS

# model weights and tensors: the first group of aienv.archive.policy.STORED_EXTENSIONS
MODEL_SUFFIXES = frozenset(
    {
        ".safetensors", ".gguf", ".ggml", ".bin", ".pt", ".pth", ".ckpt", ".onnx",
        ".h5", ".keras", ".tflite", ".mlmodel", ".pb",
    }
)  # fmt: skip
assert MODEL_SUFFIXES <= STORED_EXTENSIONS  # the archive stores weights as they are
AMBIGUOUS_SUFFIXES = frozenset({".bin", ".pb", ".h5"})  # weights, but not only weights
AMBIGUOUS_MIN_SIZE = 64 * 1024**2
_MODEL_NAME = re.compile(
    r"model|weight|ggml|gguf|pytorch|adapter|consolidated|checkpoint|lora|shard|params|"
    r"embedding|tensor|llama|mistral|whisper|bert|vae|unet"
)

# programs and libraries whose name on a command line (or in an image name) marks AI work
_PROGRAMS = (
    "vllm", "ollama", "llama-server", "llama-cli", "llama.cpp", "llama_cpp", "llamafile",
    "koboldcpp", "text-generation-launcher", "text-generation-inference", "text-generation-webui",
    "tritonserver", "sglang", "localai", "local-ai", "lmdeploy", "exllamav2", "tabbyapi",
    "comfyui", "stable-diffusion-webui", "invokeai", "whisper", "faster-whisper",
    "torchrun", "torch", "pytorch", "tensorflow", "tensorboard", "transformers", "diffusers",
    "deepspeed", "jax", "onnxruntime", "ctranslate2", "mlx_lm", "open-webui",
    "huggingface", "huggingface-cli", "gradio", "langchain", "llama_index", "openllm",
)  # fmt: skip
# a name counts only as a whole word: "torch" in "torch.distributed" but not in "scorched"
_PROGRAM_RE = re.compile(
    r"(?<![a-z0-9_])("
    + "|".join(re.escape(p) for p in sorted(_PROGRAMS, key=len, reverse=True))
    + r")(?![a-z0-9_])"
)
# shared-library name prefixes (file name in /proc/PID/maps) -> the framework they belong to
_LIBRARIES = (
    ("libtorch", "torch"), ("libc10", "torch"),
    ("libtensorflow", "tensorflow"), ("_pywrap_tensorflow", "tensorflow"),
    ("libcudart", "cuda"), ("libcublas", "cuda"), ("libcudnn", "cudnn"), ("libnccl", "nccl"),
    ("libnvinfer", "tensorrt"), ("libonnxruntime", "onnxruntime"), ("libllama", "llama.cpp"),
    ("libggml", "ggml"), ("libxla", "jax"), ("xla_extension", "jax"), ("libjax", "jax"),
    ("libctranslate2", "ctranslate2"), ("libmlx", "mlx"), ("librocm", "rocm"),
    ("libamdhip", "rocm"), ("libopenvino", "openvino"),
)  # fmt: skip
# a path component that names the package a mapped extension module came from
_PACKAGE_DIRS = frozenset({"vllm", "torch", "tensorflow", "llama_cpp", "ctranslate2", "jaxlib"})
# where loaders keep weights without a suffix: the Hugging Face cache (large files are
# stored by their sha256; small ones, config and tokenizer, by a 40-digit git hash)...
_HF_BLOB = re.compile(r"/models--([^/]+)/blobs/[0-9a-f]{64}$")  # ORG--NAME, or NAME
# ...and Ollama (OLLAMA_MODELS may move the models folder; the blob names stay)
_OLLAMA_BLOB = re.compile(r"/models/blobs/sha256[-:][0-9a-f]{64}$")
MAX_MODEL_FILES = 32  # a process holding thousands of shards is listed by its first few
_MAPPED_PATH = re.compile(r"^\S+ \S+ \S+ \S+ \S+ +(/.*)$", re.MULTILINE)


def model_store(path: str) -> str:
    """The loader's store a model file without a suffix is in ("Hugging Face cache,
    ORG/NAME", "Ollama"), or "" when the path is none of theirs."""
    found = _HF_BLOB.search(path)
    if found:
        return f"Hugging Face cache, {found[1].replace('--', '/')}"
    return "Ollama" if _OLLAMA_BLOB.search(path) else ""


def is_model_file(path: str) -> bool:
    """Whether a path looks like model weights: by its suffix, as the archive decides;
    for suffixes other programs use too (``.bin``: Chromium's V8 snapshot, firmware),
    only with a name that says so (``pytorch_model.bin``, ``ggml-base.bin``) or a size
    only weights have; or a blob of a loader's store (``model_store``)."""
    if model_store(path):
        return True
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MODEL_SUFFIXES:
        return False
    if suffix not in AMBIGUOUS_SUFFIXES:
        return True
    if _MODEL_NAME.search(os.path.basename(path).lower()):
        return True
    try:
        return os.stat(path).st_size >= AMBIGUOUS_MIN_SIZE
    except OSError:  # another mount namespace (a container) or gone: the name decides
        return False


def cmdline_reasons(cmdline: Iterable[str]) -> list[str]:
    """One reason per AI program or library the command line names."""
    return text_reasons(" ".join(cmdline), "command line")


def text_reasons(text: str, where: str) -> list[str]:
    """One reason per AI program named in ``text`` (a command line, an image name...)."""
    found: list[str] = []
    for match in _PROGRAM_RE.finditer(text.lower()):
        name = match.group(1)
        if name not in found:
            found.append(name)
    return [f"{where} mentions {name}" for name in found]


def library_reasons(paths: Iterable[str]) -> list[str]:
    """One reason per AI framework among mapped files (libraries or extension modules)."""
    seen: dict[str, str] = {}  # framework -> library that showed it
    for path in paths:
        folder, _, name = path.rpartition("/")
        if not (name.endswith(".so") or ".so." in name):
            continue
        for prefix, framework in _LIBRARIES:
            if name.startswith(prefix) and framework not in seen:
                seen[framework] = prefix
        for part in folder.split("/"):
            if part in _PACKAGE_DIRS and part not in seen:
                seen[part] = f"{part} extension {name}"
    return [f"loads {lib} ({framework})" for framework, lib in seen.items()]


def model_reasons(files: Iterable[str]) -> list[str]:
    """One reason per model-weight file held open or mapped (with the loader's store
    for a blob that has no suffix)."""
    out = []
    for path in files:
        store = model_store(path)
        out.append(f"holds model file {path} open" + (f" ({store})" if store else ""))
    return out


def mapped_paths(pid: int) -> list[str]:
    """Distinct files mapped into a process (/proc/PID/maps); empty when not allowed.

    Reading maps costs a few hundred microseconds for a big process, so callers
    that sample repeatedly do it rarely (see ``processes.ProcessTable``).
    """
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return []
    paths = dict.fromkeys(m.removesuffix(" (deleted)") for m in _MAPPED_PATH.findall(text))
    return list(paths)


def open_paths(pid: int) -> list[str]:
    """What the process's file descriptors point to (/proc/PID/fd); empty when not allowed."""
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return []
    out = []
    for fd in fds:
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"{base}/{fd}"))
    return out


def _model_files(pid: int, mapped: Iterable[str]) -> list[str]:
    found = {p for p in open_paths(pid) if p.startswith("/") and is_model_file(p)}
    found.update(p for p in mapped if is_model_file(p))
    return sorted(found)[:MAX_MODEL_FILES]


def model_files(proc: psutil.Process, mapped: Iterable[str] | None = None) -> list[str]:
    """Model-weight files the process holds open or has mapped (``mapped``: its
    ``mapped_paths`` when the caller has them already); never raises."""
    return _model_files(proc.pid, mapped_paths(proc.pid) if mapped is None else mapped)


def recognise_parts(pid: int, cmdline: list[str]) -> list[str]:
    """Why a process is AI-related, from its command line (given: callers keep it),
    its maps and its open files."""
    mapped = mapped_paths(pid)
    return (
        cmdline_reasons(cmdline)
        + library_reasons(mapped)
        + model_reasons(_model_files(pid, mapped))
    )


def recognise(proc: psutil.Process) -> list[str]:
    """Why a process is AI-related (empty: no sign of it); never raises."""
    cmdline: list[str] = []
    with contextlib.suppress(psutil.Error, OSError):
        cmdline = proc.cmdline()
    return recognise_parts(proc.pid, cmdline)
