"""Serve the page at `/` of `scoperun serve`'s app, on the service's token store, queue and runs.

    install(app, service)     # adds the page's routes (/, /login, /runs, /cases, /alerts, /static)

It also starts the alert loop (scoperun.alerts.AlertLoop) with the server and stops it with it.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from scoperun.service.page.app import OUTPUT_SHOWN, PageContext, page_routes
from scoperun.service.page.session import Principal

__all__ = ["install"]

log = logging.getLogger(__name__)


def install(app: Any, service: Any) -> None:
    """Serve the page under `/` of `app` and evaluate the alerts while the server runs."""
    from scoperun.alerts import AlertLoop

    store = service.auth.store

    def lookup(digest: str) -> Principal | None:
        found = None
        for entry in store.active():
            # Compare with every entry, match or not, so the time taken tells nothing.
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        return Principal(found.name, found.role, found.sha256) if found is not None else None

    def status() -> dict[str, Any]:
        queue = service.queue
        pool = service.extras.get("pool_status")
        return {"queue": queue.depth, "running": queue.running, "max_concurrent": queue.max_concurrent,
                "pool": pool() if callable(pool) else None}

    def live_output(execution_id: str) -> tuple[str, str] | None:
        from scoperun.service.events import read_events

        path = service.state_dir / "events" / f"{execution_id}.jsonl"
        events = read_events(path)
        if not events:
            return None
        streams = {"stdout": [], "stderr": []}  # type: dict[str, list[str]]
        for ev in events:
            if ev.event in streams:
                streams[ev.event].append(str(ev.data.get("text", "")))
        # The newest output matters while a run goes on: keep the tail.
        return tuple("".join(streams[s])[-OUTPUT_SHOWN:] for s in ("stdout", "stderr"))  # type: ignore[return-value]

    def stop(execution_id: str, by: str) -> bool:
        manager = service.extras.get("runs")
        run = manager.active.get(execution_id) if manager is not None else None
        if run is None:
            return False  # not this server's run: the CLI's path (kill its container by label)
        manager.cancel(run, by)
        return True

    ctx = PageContext(settings=service.settings, lookup=lookup, status=status, live_output=live_output,
                      stop=stop, open_access=lambda: service.auth.open)
    app.router.routes.extend(page_routes(ctx))
    loop = AlertLoop(service.settings)
    service.extras["alerts"] = loop

    async def start(_: Any) -> None:
        loop.start()

    async def shutdown(_: Any) -> None:
        loop.stop()

    service.extras.setdefault("startup", []).append(start)
    service.extras.setdefault("shutdown", []).append(shutdown)
