"""Typer without pydantic for the values that need no conversion.

Typer (0.2x) converts each parameter's value through a pydantic
``TypeAdapter``, built the first time the parameter is processed: even the
``--help`` flag's absent value and a string argument that stays a string.
Importing pydantic and building those adapters costs ~150 ms per command,
more than everything else ``aienv list`` does.

``install()`` wraps typer's builder so that a value needing no conversion
passes through as it is: an absent value (None), a ``str`` for a ``str``
parameter, an ``int`` (or a string of digits) for an ``int`` parameter within
its bounds. Any other value — a path, a choice, a custom parser, a number out
of bounds or badly written — builds typer's adapter as before, so typer's own
conversions and error messages are unchanged. If typer's internals are not
the ones this knows, ``install()`` changes nothing: the CLI is only slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_NO = object()  # "convert it the usual way"


def _passthrough(descriptor: Any, value: Any, param: Any) -> Any:
    """The value as typer would return it, when that needs no conversion; else ``_NO``."""
    multiple = bool(param.multiple) or param.nargs == -1
    if value is None:
        return () if multiple else None
    if multiple or param.nargs != 1:
        return _NO
    info = descriptor.parameter_info
    if getattr(info, "parser", None) is not None:
        return _NO
    kind = descriptor.annotation
    if kind is str and type(value) is str:
        return value
    if kind is int:
        if type(value) is str and value.isascii() and value.isdigit():
            value = int(value)
        if type(value) is int:
            low, high = getattr(info, "min", None), getattr(info, "max", None)
            if (low is None or value >= low) and (high is None or value <= high):
                return value
    return _NO


class _Deferred:
    """A parameter's conversion, building typer's own only for a value that needs it."""

    __slots__ = ("_build", "_descriptor", "_real")

    def __init__(self, descriptor: Any, build: Callable[[Any], Any]) -> None:
        self._descriptor = descriptor
        self._build = build
        self._real: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        fast = _passthrough(self._descriptor, value, param)
        if fast is not _NO:
            return fast
        if self._real is None:
            self._real = self._build(self._descriptor)
        return self._real.coerce(value, param=param, ctx=ctx)


def install() -> bool:
    """Put the fast path in place (once); False when typer is not the known shape."""
    try:
        from typer import core
    except ImportError:  # pragma: no cover - typer is a dependency
        return False
    build = getattr(core, "build_runtime_param", None)
    parameter = getattr(core, "_TyperParameter", None)
    if build is None or parameter is None or not hasattr(parameter, "get_runtime_param"):
        return False
    if getattr(build, "aienv_fast", False):
        return True

    def fast_build(descriptor: Any) -> Any:
        return _Deferred(descriptor, build)

    fast_build.aienv_fast = True  # type: ignore[attr-defined]
    setattr(core, "build_runtime_param", fast_build)  # noqa: B010 - typed as typer's own
    return True
