"""scoperun as a service: the ASGI app (HTTP API, SSE, page, alerts)."""
