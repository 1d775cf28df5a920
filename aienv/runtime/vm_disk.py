"""A VM's disk: the workspace's image checked, and the copy-on-write overlay over it."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

from aienv.errors import RuntimeFailure

log = logging.getLogger(__name__)

QEMU_IMG_TIMEOUT = 120.0
OVERLAY = "disk.qcow2"
OVERLAY_META = "disk.json"
BASE_FORMATS = ("raw", "qcow2")


def _qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(
            ["qemu-img", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT,
        )
    except FileNotFoundError as exc:
        raise RuntimeFailure("qemu-img is not installed: install qemu-utils") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFailure(f"qemu-img {args[0]} took longer than {QEMU_IMG_TIMEOUT:g} s") from exc
    if done.returncode != 0:
        raise RuntimeFailure(f"qemu-img {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def base_format(base: Path) -> str:
    """The format of a workspace's disk image, refusing one that reaches other files."""
    try:
        info = json.loads(_qemu_img("info", "--output=json", "--force-share", str(base)))
    except ValueError as exc:
        raise RuntimeFailure(f"qemu-img info gave no JSON for {base.name}") from exc
    fmt = str(info.get("format", ""))
    if fmt not in BASE_FORMATS:
        raise RuntimeFailure(
            f"the disk image {base.name} is {fmt or 'of an unknown format'}; "
            f"use {' or '.join(BASE_FORMATS)} (qemu-img convert -O qcow2 ...)"
        )
    data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
    if info.get("backing-filename") or info.get("full-backing-filename") or data_file:
        raise RuntimeFailure(
            f"the disk image {base.name} refers to another file; flatten it first "
            "(qemu-img convert -O qcow2 IMAGE FLAT.qcow2)"
        )
    return fmt


def prepare_overlay(base: Path, state_dir: Path) -> tuple[Path, bool]:
    """The overlay for ``base`` in ``state_dir``, made now unless one for the same base
    (path, size and modification time) is there already. Returns it and whether it is new."""
    overlay = state_dir / OVERLAY
    meta_path = state_dir / OVERLAY_META
    st = base.stat()
    meta = {"base": str(base), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if overlay.is_file():
        try:
            kept = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            kept = None
        if kept == meta:
            return overlay, False
        log.warning("the disk image %s changed: the VM's disk starts afresh from it", base)
    fmt = base_format(base)
    state_dir.mkdir(parents=True, exist_ok=True)
    partial = overlay.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _qemu_img("create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(base), str(partial))
    partial.replace(overlay)
    meta_path.write_text(json.dumps(meta))
    return overlay, True


def rebase_overlay(base: Path, state_dir: Path) -> None:
    """Point the overlay in ``state_dir`` (moved from another node, with its snapshots)
    at ``base``, this node's copy of the same image, and record it as its base."""
    overlay = state_dir / OVERLAY
    fmt = base_format(base)
    _qemu_img("rebase", "-u", "-f", "qcow2", "-F", fmt, "-b", str(base), str(overlay))
    st = base.stat()
    meta = {"base": str(base), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    (state_dir / OVERLAY_META).write_text(json.dumps(meta))
