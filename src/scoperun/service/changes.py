"""/v1/changesets: what a run changed, and apply / discard / rollback (admin; Idempotency-Key)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from scoperun.service.deps import Admin, Reader, Service, ServiceDep
from scoperun.service.idempotency import fingerprint, parse_key
from scoperun.service.problems import Problem

__all__ = ["install", "router"]

router = APIRouter(tags=["change sets"])


def _check(execution_id: str) -> str:
    if not execution_id.replace("_", "").replace("-", "").isalnum() or len(execution_id) > 100:
        raise Problem(404, "not-found", f"no run {execution_id!r}")
    return execution_id


@router.get("/v1/changesets/{execution_id}", summary="A run's change set, with text diffs of small files")
async def get_changeset(execution_id: str, service: ServiceDep, _: Reader, diffs: bool = True) -> dict[str, Any]:
    from scoperun.changes import load_change_set, text_diffs
    from scoperun.errors import ChangesError

    def load() -> dict[str, Any]:
        try:
            cs, source = load_change_set(service.settings, _check(execution_id))
        except ChangesError as exc:
            raise Problem(404, "not-found", str(exc)) from None
        return {"change_set": cs.model_dump(mode="json"), "source": source,
                "diffs": text_diffs(service.settings, cs) if diffs else []}

    return await asyncio.to_thread(load)


@router.post("/v1/changesets/{execution_id}/{action}", summary="Apply, discard or roll back a run's changes (admin)")
async def act_on_changeset(
    execution_id: str, action: Literal["apply", "discard", "rollback"], request: Request, service: ServiceDep,
    caller: Admin, force: bool = False,
    idempotency_key: Annotated[str | None, Header(description="Retries with the same key never act twice.")] = None,
) -> JSONResponse:
    from scoperun.changes import apply_changes, discard_changes, rollback_changes

    _check(execution_id)
    key = parse_key(idempotency_key)
    scope = f"{caller.name}\x00POST /v1/changesets/{execution_id}/{action}"
    if key is not None:
        replay = service.idempotency.begin(scope, key, fingerprint(await request.body()) + f"+force={force}")
        if replay is not None:
            return JSONResponse(replay.body, status_code=replay.status, headers=replay.headers)
    by = f"{caller.name} (scoperun serve)"

    def act() -> Any:
        if action == "apply":
            return apply_changes(service.settings, execution_id, force=force, by=by)
        if action == "discard":
            return discard_changes(service.settings, execution_id, by=by)
        return rollback_changes(service.settings, execution_id, force=force, by=by)

    try:
        cs = await asyncio.to_thread(act)
    except BaseException:
        if key is not None:
            service.idempotency.release(scope, key)
        raise
    body = {"change_set": cs.model_dump(mode="json"), "action": action, "by": caller.name}
    if key is not None:
        service.idempotency.complete(scope, key, 200, body)
    return JSONResponse(body)


def install(app: FastAPI, service: Service) -> None:
    """Add the change-set router."""
    app.include_router(router)
