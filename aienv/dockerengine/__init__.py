"""The Docker engine, behind one adapter (``client.Engine``) and its image helpers
(``images``): the container runtime, the inventory and capture all reach the
engine through it, so errors read the same everywhere."""

from aienv.dockerengine.client import (
    Engine,
    engine_errors,
    explanation,
    sdk,
    sdk_errors,
    unreachable,
)

__all__ = ["Engine", "engine_errors", "explanation", "sdk", "sdk_errors", "unreachable"]
