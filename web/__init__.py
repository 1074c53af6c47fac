"""The aiohttp application: the original project's HTTP API (and, later, /v1 and the web UI)."""
