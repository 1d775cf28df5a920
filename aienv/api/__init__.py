"""The HTTP API on port 37778 (aiohttp): JSON REST under ``/api/v1`` and archives.

``app`` builds the application and its error middleware over the components
the node hands it, each under its own typed key (``keys``); ``access`` gives
every request its role; one module per resource group holds the handlers,
which parse, call a use-case (``aienv.flows``) or a part, and answer.
"""
