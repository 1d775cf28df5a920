"""What a capture leaves out, and copying what it keeps.

A captured workspace is shared with the LAN, so capture is careful with what it
copies in: environment variables whose names (or values) look like secrets are
left out and listed for a person to fill; variables that describe the machine
or the session (``DISPLAY``, ``SSH_*``, ``XDG_*``, ``PWD``…) are dropped; files
that often hold secrets (``.env``, keys, ``.netrc``…), caches, virtualenvs
(machine-specific: their packages are listed instead), symbolic links and
special files (a workspace holds neither) are not copied, and each is named.
The secret rule is the inventory's (``aienv.system.containers``), so what the
inventory masks is what a capture leaves out.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from aienv.system.containers import SECRET_NAME, URL_PASSWORD

MAX_FILES = 100_000  # a folder with more is referenced, whatever its size
# variables that describe the machine or the session, not the workload
NOISE = frozenset(
    {
        "DISPLAY", "WAYLAND_DISPLAY", "PWD", "OLDPWD", "SHLVL", "_", "HOME", "USER", "LOGNAME",
        "SHELL", "PATH", "TERM", "COLORTERM", "LS_COLORS", "MAIL", "HOSTNAME", "LANGUAGE",
        "VIRTUAL_ENV", "VIRTUAL_ENV_PROMPT", "PS1", "LESSOPEN", "LESSCLOSE", "INVOCATION_ID",
        "JOURNAL_STREAM", "SYSTEMD_EXEC_PID", "MANAGERPID", "NOTIFY_SOCKET", "WINDOWID",
        "DESKTOP_SESSION", "SESSION_MANAGER", "MOTD_SHOWN", "STY", "WINDOW", "GPG_TTY",
        "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
        "NUMEXPR_MAX_THREADS",
    }
)  # fmt: skip
NOISE_PREFIXES = ("SSH_", "XDG_", "DBUS_", "AIENV_", "TMUX", "SUDO_", "GNOME_", "KDE_",
                  "TERM_", "VSCODE_", "GDM", "QT_", "GTK_", "PYENV_")  # fmt: skip
# files left out of copied folders: they often hold secrets
SECRET_FILES = re.compile(r"^(\.env(\..*)?|.*\.(pem|key|p12|pfx)|id_(rsa|dsa|ecdsa|ed25519)|"
                          r"\.netrc|\.pgpass|\.git-credentials|credentials(\..*)?)$")  # fmt: skip
SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})

# -- environment variables ----------------------------------------------------------


def is_noise(key: str) -> bool:
    return key in NOISE or key.startswith(NOISE_PREFIXES)


def is_secret(key: str, value: str = "") -> bool:
    """Whether a variable looks like it holds a secret: by its name (TOKEN, SECRET,
    PASSWORD, KEY, AUTH…), or a URL with a password in it."""
    return bool(SECRET_NAME.search(key) or URL_PASSWORD.search(value))


def split_env(env: dict[str, str], *, drop_noise: bool) -> tuple[dict[str, str], list[str]]:
    """The variables to keep, and the names of those left out as secrets."""
    kept: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in sorted(env.items()):
        if drop_noise and is_noise(key):
            continue
        if key.startswith("AIENV_"):  # set by the node that launched it; a twin gets its own
            continue
        if is_secret(key, value):
            secrets.append(key)
        elif (
            key
            and (key[0].isalpha() or key[0] == "_")
            and all(c.isalnum() or c == "_" for c in key)
        ):
            kept[key] = value
    return kept, secrets


def measure(path: Path, limit: int, exclude: frozenset[str] = frozenset()) -> tuple[int, bool]:
    """The bytes a copy of ``path`` would hold, and whether it stays within ``limit``
    (counting stops as soon as it does not). Folders in ``exclude`` are not counted."""
    if path.is_file():
        size = path.stat().st_size
        return size, size <= limit
    total = files = 0
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if keep_dir(Path(root) / d, exclude)]
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if os.path.isfile(os.path.join(root, name)) and not os.path.islink(
                    os.path.join(root, name)
                ):
                    total += st.st_size
                    files += 1
            if total > limit or files > MAX_FILES:
                return total, False
    return total, True


def keep_dir(path: Path, exclude: frozenset[str] = frozenset()) -> bool:
    """Not a cache, a link, a virtualenv (machine-specific; its packages are listed) or
    a folder in ``exclude`` (the node's home: a capture never copies the node into itself)."""
    return (
        path.name not in SKIP_DIRS
        and not path.is_symlink()
        and not (path / "pyvenv.cfg").is_file()
        and str(path) not in exclude
    )


def copy_folder(
    source: Path, dest: Path, skipped: list[str], exclude: frozenset[str] = frozenset()
) -> None:
    """Copy regular files and folders; links, special files, secret-looking files,
    caches, virtualenvs and folders in ``exclude`` are left out and named in ``skipped``.
    A full disk stops the copy (``OSError``); another file that cannot be read is skipped."""
    dest.mkdir(parents=True, exist_ok=True)
    for root, dirs, names in os.walk(source):
        here = Path(root)
        target = dest / here.relative_to(source)
        kept = []
        for d in dirs:
            if keep_dir(here / d, exclude):
                kept.append(d)
                (target / d).mkdir(exist_ok=True)
            elif (here / d).name not in SKIP_DIRS:
                skipped.append(f"{here / d} (a link, a virtualenv or the node's home)")
        dirs[:] = kept
        for name in names:
            path = here / name
            if SECRET_FILES.match(name):
                skipped.append(f"{path} (may hold secrets)")
            elif path.is_symlink() or not path.is_file():
                skipped.append(f"{path} (a link or special file)")
            else:
                try:
                    # never through a link, even one swapped in since the check above (a
                    # root node copying a user's folder must not copy what a link points to)
                    shutil.copy2(path, target / name, follow_symlinks=False)
                    if (target / name).is_symlink():
                        (target / name).unlink()
                        skipped.append(f"{path} (a link or special file)")
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    skipped.append(f"{path} ({exc.strerror or exc})")
