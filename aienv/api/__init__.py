"""The HTTP API on port 37778 (aiohttp): JSON REST under ``/api/v1`` and archives.

``app`` builds the application and its error middleware; one module per
resource group holds the handlers. Admin actions (anything that changes the
node) are accepted only from the node's own machine for now.
"""
