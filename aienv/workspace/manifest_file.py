"""``workspace.yaml`` on disk: read (bounded in bytes and in what its YAML aliases
expand to), parsed once per version of the file, and edited atomically."""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml

from aienv.errors import WorkspaceError
from aienv.workspace.manifest import MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, parse_manifest

# libyaml's loader where PyYAML was built with it (the wheels are): the same safe
# constructors, several times faster than the pure-Python one
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MANIFEST_CACHE_SIZE = 1024
# values a manifest may hold once its YAML aliases are expanded: a few kilobytes of
# anchors nested seven deep otherwise become millions of values (a "billion laughs")
# that every listing, JSON answer and validation would walk
MAX_MANIFEST_VALUES = 20_000


def read_manifest_data(folder: Path) -> Any:
    """The parsed YAML of ``folder/workspace.yaml``, not yet validated."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise WorkspaceError(f"{folder} is not a workspace: it has no {MANIFEST_FILE}")
    raw = path.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise WorkspaceError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = yaml.load(raw, Loader=YAML_LOADER)  # a safe loader (CSafeLoader or SafeLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise WorkspaceError(f"{path}: not valid YAML ({exc or 'nested too deeply'})") from exc
    check_expansion(data, str(path))
    return data


def check_expansion(data: Any, source: str, limit: int = MAX_MANIFEST_VALUES) -> None:
    """Refuse YAML whose aliases expand beyond ``limit`` values, or refer to themselves.

    The loader shares one object for every use of an anchor, so the data is small in
    memory; what it would cost to walk once expanded is counted here, each shared
    object once (linear in the file, however deep the aliases go)."""
    sizes: dict[int, int] = {}
    walking: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in walking:
            raise WorkspaceError(f"{source}: a YAML alias refers to itself")
        walking.add(key)
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += size(item)
            if total > limit:
                raise WorkspaceError(
                    f"{source}: its YAML aliases expand to more than {limit} values; "
                    "write the repeated parts out, or use fewer nested aliases"
                )
        walking.discard(key)
        sizes[key] = total
        return total

    try:
        size(data)
    except RecursionError as exc:
        raise WorkspaceError(f"{source}: nested too deeply") from exc


class _ManifestCache:
    """Parsed manifests keyed by their file's identity (inode, size, mtime, ctime).

    Listing workspaces, answering an announcement request or a peer's details read
    every manifest; parsing and validating them each time made those requests
    CPU-bound (docs/benchmarks.md, Load). A ``Manifest`` is frozen, so one parsed
    object can be handed to every reader. The key changes with any write: an edit
    renames a new file in (new inode), and an editor writing in place changes
    mtime and ctime, so no invalidation hook is needed and a hand edit is seen at
    once. Only valid manifests are kept; an error is raised again on every read.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Path, tuple[tuple[int, ...], Manifest]] = OrderedDict()
        self._lock = threading.Lock()  # readers run on the loop and in threads

    def load(self, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        try:
            st = path.stat()
        except OSError:
            key: tuple[int, ...] | None = None
        else:
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            with self._lock:
                hit = self._items.get(path)
                if hit is not None and hit[0] == key:
                    self._items.move_to_end(path)
                    return hit[1]
        manifest = parse_manifest(read_manifest_data(folder), str(path))
        if key is not None:
            with self._lock:
                self._items[path] = (key, manifest)
                self._items.move_to_end(path)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        return manifest


_cache = _ManifestCache(MANIFEST_CACHE_SIZE)


def load_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/workspace.yaml`` (parsed once per version of the file)."""
    return _cache.load(folder)


def edit_manifest(folder: Path, changes: dict[str, Any], staging: Path | None = None) -> Manifest:
    """Set top-level keys of ``folder/workspace.yaml``, validated first, replaced atomically.

    The other keys keep their order; YAML comments are not kept. The new file is
    written in ``staging`` (default: ``folder``; on the same file system) and renamed
    over the old one: the node stages in its ``tmp`` folder, which it empties at
    start, so an edit cut off by a crash leaves no stray file in the workspace (it
    would be packed and shared with the rest).
    """
    data = read_manifest_data(folder)
    if not isinstance(data, dict):
        raise WorkspaceError(f"{folder / MANIFEST_FILE}: the top level must be a mapping of keys")
    data.update(changes)
    manifest = parse_manifest(data)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
    if len(text) > MAX_MANIFEST_BYTES:
        raise WorkspaceError(f"{MANIFEST_FILE} would be larger than {MAX_MANIFEST_BYTES} bytes")
    fd, staged = tempfile.mkstemp(dir=staging or folder, prefix=f".{MANIFEST_FILE}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, folder / MANIFEST_FILE)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return manifest
