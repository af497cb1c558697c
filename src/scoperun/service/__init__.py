"""`scoperun serve`: one long-lived process that owns the engine and the queue, behind an HTTP API.

    from scoperun.service.app import create_app     # needs the `service` extra (FastAPI, uvicorn)
    app = create_app(settings)                      # an ASGI app; `scoperun serve` runs it on uvicorn

Modules: `tokens` (the hashed token file; no web framework), `auth` (bearer tokens, roles,
Host/Origin checks), `problems` (RFC 9457 errors), `idempotency` (Idempotency-Key store),
`queue` (the global fair queue), `events` (each run's numbered event log, SSE fan-out),
`runs` (the /v1/runs router), `app` (the app factory), `page` (the monitoring page at `/`). Nothing here is imported by `import scoperun`.
"""
