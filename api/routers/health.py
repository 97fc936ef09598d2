from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import RuntimeDep
from api.errors import envelope

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get(
    "/healthz",
    name="healthz",
    response_model=Health,
    summary="Liveness and database check (no auth)",
    responses={503: {"description": "The database is unreachable"}},
)
def healthz(runtime: RuntimeDep):  # type: ignore[no-untyped-def]
    try:
        runtime.db.ping()
    except Exception:
        return envelope(503, "UNAVAILABLE", "the database is unreachable", {"database": "error"})
    return Health(status="ok", database="ok")
