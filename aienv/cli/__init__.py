"""The ``aienv`` command: a thin client of the local node's HTTP API (``AIENV_URL``),
plus ``aienv serve``, which runs the node itself."""
