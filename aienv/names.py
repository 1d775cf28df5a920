"""The one naming rule for workspaces, environments and nodes' local objects.

A name is 1-63 characters of lowercase letters, digits, ``-`` and ``_``,
starting with a letter or digit. Such a name is safe as a folder name, in a
URL path segment and in a DNS label, so it is checked once at every edge
(CLI, API, manifests) and trusted inside.
"""

from __future__ import annotations

import re

from aienv.errors import InvalidInput

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NAME_RULE = (
    "1-63 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
)


def is_valid_name(name: str) -> bool:
    return bool(NAME_RE.fullmatch(name))


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it follows the rule, else raise ``InvalidInput``."""
    if not isinstance(name, str) or not is_valid_name(name):
        raise InvalidInput(f"invalid {what} {name!r}: use {NAME_RULE}")
    return name
