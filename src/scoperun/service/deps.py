"""What the routers take from the app: the Service they share and the auth dependencies.

    async def handler(service: ServiceDep, caller: Runner) -> ...   # in any router of this package

The app (app.py) builds the Service and mounts the routers; routers import only this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from scoperun.config import Settings
from scoperun.executor import Executor
from scoperun.service.auth import Auth
from scoperun.service.idempotency import IdempotencyStore
from scoperun.service.queue import FairQueue
from scoperun.service.tokens import Principal

__all__ = ["Admin", "Reader", "Runner", "Service", "ServiceDep", "get_service", "requires", "service_dir"]


def service_dir(settings: Settings) -> Path:
    """Host-local state of the server (event logs, idempotency keys): `<state_dir>/service`."""
    from scoperun.audit.state import audit_dir_key, state_dir

    audit_dir = Path(settings.workspace).expanduser().resolve() / settings.audit_dir
    return state_dir(settings) / "service" / audit_dir_key(audit_dir)


@dataclass
class Service:
    """What the app's handlers share: settings, the one executor, auth, the queue, the keys."""

    settings: Settings
    executor: Executor
    auth: Auth
    queue: FairQueue
    idempotency: IdempotencyStore
    state_dir: Path
    bind_host: str
    owns_executor: bool = False
    ping_interval: float = 15.0
    extras: dict[str, Any] = field(default_factory=dict)  # other routers' state (runs registry, page, ...)

    def close(self) -> None:
        """Release what the service made (the executor only when it made it)."""
        self.idempotency.close()
        if self.owns_executor:
            self.executor.close()


def get_service(request: Request) -> Service:
    """FastAPI dependency: the app's Service."""
    service: Service = request.app.state.service
    return service


def requires(role: str) -> Callable[[Request], Principal]:
    """FastAPI dependency: the caller, who must hold `role` or above (401 / 403 otherwise)."""

    def dependency(request: Request) -> Principal:
        service: Service = request.app.state.service
        return service.auth.require(role)(request)

    dependency.__name__ = f"requires_{role}"
    return dependency


# Annotated dependencies for handlers: `def h(service: ServiceDep, caller: Runner)`.
ServiceDep = Annotated[Service, Depends(get_service)]
Reader = Annotated[Principal, Depends(requires("read"))]
Runner = Annotated[Principal, Depends(requires("run"))]
Admin = Annotated[Principal, Depends(requires("admin"))]
