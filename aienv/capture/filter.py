"""What a capture leaves out, and copying what it keeps.

A captured workspace is shared with the LAN, so capture is careful with what it
copies in: environment variables whose names (or values) look like secrets are
left out and listed for a person to fill; secret values on a command line
become ``{env.NAME}`` references to fill the same way; variables that describe
the machine or the session (``DISPLAY``, ``SSH_*``, ``XDG_*``, ``PWD``…) are
dropped; files and folders that often hold secrets (``.env``, keys, ``.netrc``,
``.ssh/``, ``.aws/``, ``.docker/``…), caches, virtualenvs (machine-specific:
their packages are listed instead), symbolic links and special files (a
workspace holds neither) are not copied, and each is named. A home folder or
the root folder is never copied whole. The secret rule is the inventory's
(``aienv.system.containers``), so what the inventory masks is what a capture
leaves out.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from aienv.system.containers import AI_ENV_HINTS, SECRET_NAME, URL_PASSWORD, harmless, mask_args

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
# files never copied (in a folder, or mounted alone): they often hold secrets
SECRET_FILES = re.compile(
    r"^(\.env(\..*)?|.+\.env|\.envrc|.*\.(pem|key|p12|pfx|jks|keystore|kdbx)|"
    r"id_(rsa|dsa|ecdsa|ed25519)(_sk)?|ssh_host_.*_key|\.netrc|_netrc|\.pgpass|"
    r"\.git-credentials|credentials(\..*)?|\.pypirc|\.npmrc|\.yarnrc(\.yml)?|\.htpasswd|"
    r"\.vault-token|\.boto|\.s3cfg|token|stored_tokens|g?shadow-?|.*_history|\.histfile)$"
)
# folders never copied, wherever they are (credentials of ssh, gpg, clouds, registries,
# clusters, browsers, keyrings); matched against the whole path
SECRET_DIRS = re.compile(
    r"(^|/)(\.ssh|\.gnupg|\.aws|\.azure|\.docker|\.kube|\.password-store|\.huggingface|"
    r"\.mozilla|\.config/(gh|gcloud|hub|google-chrome|chromium)|\.local/share/keyrings|"
    r"ssl/private)(/|$)"
)
SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
CERT_NAME = re.compile(r"CERT|CA_BUNDLE|CAFILE|CA_FILE|CAPATH", re.IGNORECASE)
TEXT_SUFFIXES = frozenset(
    {".py", ".js", ".mjs", ".ts", ".sh", ".yaml", ".yml", ".toml", ".json", ".cfg", ".ini",
     ".conf", ".r", ".jl", ".rb", ".go"}
)  # fmt: skip

# -- environment variables ----------------------------------------------------------


def is_noise(key: str) -> bool:
    return key in NOISE or key.startswith(NOISE_PREFIXES)


def is_secret(key: str, value: str = "") -> bool:
    """Whether a variable looks like it holds a secret: by its name (TOKEN, SECRET,
    PASSWORD, KEY, AUTH…) unless its value is one no secret is (a number, a boolean),
    or a URL with a password in it."""
    return bool((SECRET_NAME.search(key) and not harmless(value)) or URL_PASSWORD.search(value))


def _valid_name(key: str) -> bool:
    return (
        bool(key)
        and (key[0].isalpha() or key[0] == "_")
        and all(c.isalnum() or c == "_" for c in key)
    )


@dataclass(slots=True)
class EnvSplit:
    kept: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)


def sort_process_env(
    env: dict[str, str], parent: dict[str, str] | None, named: frozenset[str]
) -> EnvSplit:
    """A captured process's variables: kept when they are its settings, else dropped
    saying why. The rule (docs/workspace-format.md, "Captured workspaces"):

    - dropped: what the node set (``AIENV_*``), what describes the machine or the
      session (``DISPLAY``, ``SSH_*``…), paths to certificates (the twin's node has
      its own), and what it inherited — its parent process holds the same value —
      unless its files or command line name it or it is a known application
      setting (``HF_*``, ``TORCH*``, ``CUDA*``… — libraries read those);
    - secrets (by name unless the value is a number or a boolean; a URL with a
      password): left out, to fill;
    - the rest — what was set for this program — kept."""
    out = EnvSplit()
    for key, value in sorted(env.items()):
        if key.startswith("AIENV_"):
            out.dropped.append((key, "set by the node that launched it"))
        elif is_noise(key):
            out.dropped.append((key, "describes the machine or the session"))
        elif CERT_NAME.search(key) and value.startswith("/"):
            out.dropped.append((key, "a certificate path of the capturing machine"))
        elif not _valid_name(key):
            out.dropped.append((key, "not a variable name a workspace can hold"))
        elif is_secret(key, value):
            out.secrets.append(key)
        elif key in named or key.upper().startswith(AI_ENV_HINTS):
            out.kept[key] = value
        elif parent is not None and parent.get(key) == value:
            out.dropped.append((key, "inherited from the session that started it"))
        else:
            out.kept[key] = value
    return out


def names_in_files(folder: Path, keys: set[str], limit: int = 2000) -> frozenset[str]:
    """Which of ``keys`` the text files under ``folder`` name (code and configuration:
    a program reads a variable it names). Reads at most ``limit`` files of 512 KiB."""
    found: set[str] = set()
    seen = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in names:
            path = Path(root) / name
            if path.suffix not in TEXT_SUFFIXES or seen >= limit:
                continue
            seen += 1
            try:
                if path.stat().st_size > 512 * 1024:
                    continue
                text = path.read_text(errors="replace")
            except OSError:
                continue
            found |= {k for k in keys - found if k in text}
            if found == keys:
                return frozenset(found)
    return frozenset(found)


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


# -- command lines -------------------------------------------------------------------


def env_name(where: str) -> str:
    """A variable name from what names a secret: ``--api-key`` -> ``API_KEY``."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", where).strip("_").upper() or "SECRET"
    return f"_{name}" if name[0].isdigit() else name


def hide_secret_args(args: list[str], environ: dict[str, str]) -> tuple[list[str], list[str]]:
    """``args`` with each secret value (the inventory's rule: ``mask_args``) replaced by
    a reference to a variable to fill, ``{env.NAME}``, and those names:

    - ``--api-key X`` -> ``--api-key {env.API_KEY}``;
    - ``--db postgres://u:PW@h`` -> ``--db postgres://u:{env.DB_PASSWORD}@h``.

    A value the environment ``environ`` holds under that name keeps the name (one
    variable to fill); another value gets ``NAME_2``."""
    found: dict[str, str] = {}  # name -> the value it stands for (never written)

    def hide(where: str, value: str) -> str:
        if not value:
            return value
        base = name = env_name(where)
        number = 1
        while found.get(name, environ.get(name, value)) != value:
            number += 1
            name = f"{base}_{number}"
        found[name] = value
        return f"{{env.{name}}}"

    return mask_args(args, hide), list(found)


# -- files and folders -----------------------------------------------------------------


def holds_secrets(path: PurePath, *, folder: bool = False) -> bool:
    """Whether a file (or a ``folder``) may hold secrets: by its name (a file's), or a
    folder on its path (``.ssh/``, ``.docker/``, ``.config/gh/``…)."""
    if not folder and SECRET_FILES.match(path.name):
        return True
    return SECRET_DIRS.search(path.as_posix()) is not None


def whole_machine(path: PurePath, environ: dict[str, str] | None = None) -> bool:
    """The root folder or a home folder (``/root``, ``/home/NAME``, ``$HOME``): a capture
    never copies one whole (it holds a person's own files and credentials)."""
    text = posixpath.normpath(path.as_posix())
    homes = {"/", "/home", "/root", posixpath.expanduser("~"), (environ or {}).get("HOME", "/")}
    return text in {posixpath.normpath(h) for h in homes if h} or posixpath.dirname(text) == "/home"


def measure(path: Path, limit: int, exclude: frozenset[str] = frozenset()) -> tuple[int, bool]:
    """The bytes a copy of ``path`` would hold, and whether it stays within ``limit``
    (counting stops as soon as it does not). Folders in ``exclude`` are not counted.
    Raises ``OSError`` when ``path`` is missing or cannot be read."""
    st = path.stat()
    if stat.S_ISREG(st.st_mode):
        return st.st_size, st.st_size <= limit
    with os.scandir(path):  # a folder that cannot be listed is no empty one
        pass
    total = files = 0
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if keep_dir(Path(root) / d, exclude)]
        for name in names:
            file = Path(root, name)
            try:
                st = file.lstat()
            except OSError:
                continue  # copy_folder names it
            if stat.S_ISREG(st.st_mode) and not holds_secrets(file):
                total += st.st_size
                files += 1
            if total > limit or files > MAX_FILES:
                return total, False
    return total, True


def left_out(path: Path, exclude: frozenset[str] = frozenset()) -> str | None:
    """Why a folder inside a copied one is left out (None: it is copied): a cache, a
    link, a virtualenv (machine-specific; its packages are listed), a folder that may
    hold secrets, or one in ``exclude`` (the node's home: never copied into itself)."""
    try:
        if path.name in SKIP_DIRS:
            return "a cache"
        if path.is_symlink():
            return "a link"
        if (path / "pyvenv.cfg").is_file():
            return "a virtualenv"
        if str(path) in exclude:
            return "the node's home"
    except OSError as exc:
        return exc.strerror or str(exc)
    return "may hold secrets" if holds_secrets(path, folder=True) else None


def keep_dir(path: Path, exclude: frozenset[str] = frozenset()) -> bool:
    return left_out(path, exclude) is None


def copy_folder(
    source: Path, dest: Path, skipped: list[str], exclude: frozenset[str] = frozenset()
) -> None:
    """Copy regular files and folders; links, special files, secret-looking files and
    folders, caches, virtualenvs and folders in ``exclude`` are left out and named in
    ``skipped`` (caches are not named). A full disk stops the copy (``OSError``); another
    file or folder that cannot be read is skipped."""
    dest.mkdir(parents=True, exist_ok=True)

    def unreadable(exc: OSError) -> None:
        skipped.append(f"{exc.filename} ({exc.strerror or exc})")

    for root, dirs, names in os.walk(source, onerror=unreadable):
        here = Path(root)
        target = dest / here.relative_to(source)
        kept = []
        for d in dirs:
            why = left_out(here / d, exclude)
            if why is None:
                kept.append(d)
                (target / d).mkdir(exist_ok=True)
            elif why != "a cache":
                skipped.append(f"{here / d} ({why})")
        dirs[:] = kept
        for name in names:
            copy_file(here / name, target / name, skipped)


def copy_file(path: Path, dest: Path, skipped: list[str]) -> bool:
    """Copy one regular file, never through a link (even one swapped in since it was
    checked: a root node copying a user's folder must not copy what a link points to).
    A secret-looking file, a link, a special file or one that cannot be read is named in
    ``skipped`` instead; a full disk raises ``OSError``. Whether it was copied."""
    if holds_secrets(path):
        skipped.append(f"{path} (may hold secrets)")
        return False
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            skipped.append(f"{path} (a link or special file)")
            return False
        shutil.copy2(path, dest, follow_symlinks=False)
        if dest.is_symlink():
            dest.unlink()
            skipped.append(f"{path} (a link or special file)")
            return False
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        skipped.append(f"{path} ({exc.strerror or exc})")
        return False
    return True
