"""aienv-venv: a runtime plugin for aienv that runs an environment's command in a
virtualenv of its own, built from the workspace's requirements file.

``options`` (validated by ``VenvOptions``) name the command, the requirements
file and pip's arguments; ``builder`` makes and reuses the venv; ``runtime``
plugs it into the node and leaves running the command to aienv's process
runtime. Registered under the entry-point group ``aienv.runtimes`` as ``venv``.
"""

from aienv_venv.options import InvalidOptions, VenvOptions
from aienv_venv.runtime import VenvRuntime

__all__ = ["InvalidOptions", "VenvOptions", "VenvRuntime"]
