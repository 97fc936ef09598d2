"""Annotated dependencies: the runtime, the caller's identity, role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from core.keys import Identity, Role, authenticate
from core.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")


# Dependencies that neither block nor do I/O are ``async def``: FastAPI runs a plain ``def``
# dependency in the thread pool, a hand-off (and a GIL hand-over) per dependency per request.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def identify(request: Request, runtime: Runtime, authorization: str | None) -> Identity:
    """The caller's identity from ``Authorization: Bearer <key>``, or 401."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(
            401,
            "UNAUTHORIZED",
            "an API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if runtime.db.has_lookup:
        # SQLite: an indexed read on this thread's own connection, never waiting for a
        # writer (WAL), done here on the event loop; a thread hand-off would cost more.
        identity = authenticate(runtime.db, key)
    else:
        identity = await run_in_threadpool(authenticate, runtime.db, key)
    if identity is None:
        raise ApiError(
            401,
            "UNAUTHORIZED",
            "unknown or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.identity = identity
    return identity


def admit(identity: Identity, roles: frozenset[Role]) -> Identity:
    """``identity`` if its role is one of ``roles`` (admin always is), else 403."""
    if identity.role not in roles and identity.role is not Role.admin:
        names = ", ".join(sorted(r.value for r in {Role.admin, *roles}))
        raise ApiError(403, "FORBIDDEN", f"this endpoint needs one of the roles: {names}")
    return identity


async def current_key(
    request: Request,
    runtime: RuntimeDep,
    _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # the docs' scheme
) -> Identity:
    return await identify(request, runtime, request.headers.get("authorization"))


CurrentKey = Annotated[Identity, Depends(current_key)]


def require_role(*roles: Role):  # type: ignore[no-untyped-def]
    """A dependency admitting ``roles`` (and ``admin``, who may do everything)."""
    allowed = frozenset(roles)

    async def _check(identity: CurrentKey) -> Identity:
        return admit(identity, allowed)

    _check.roles = allowed  # type: ignore[attr-defined]  # read by api.fastroute
    return Depends(_check)


Admin = Annotated[Identity, require_role()]
Manager = Annotated[Identity, require_role(Role.campaign_manager)]
ManagerOrCompliance = Annotated[Identity, require_role(Role.campaign_manager, Role.compliance)]
Compliance = Annotated[Identity, require_role(Role.compliance)]
DialerKey = Annotated[Identity, require_role(Role.dialer)]
Checker = Annotated[Identity, require_role(Role.campaign_manager, Role.dialer)]
CallReader = Annotated[Identity, require_role(Role.campaign_manager, Role.compliance)]
