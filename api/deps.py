"""Annotated dependencies: the runtime, the caller's identity, role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from api.errors import ApiError
from core.keys import Identity, Role, authenticate, authenticate_async
from core.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")


# Dependencies that neither block nor do I/O are ``async def``: FastAPI runs a plain ``def``
# dependency in the thread pool, a hand-off (and a GIL hand-over) per dependency per request.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


NO_KEY = "an API key is required: Authorization: Bearer <key>"
BAD_KEY = "unknown or revoked API key"


async def key_identity(runtime: Runtime, authorization: str | None) -> Identity | str:
    """The identity of ``Authorization: Bearer <key>``, or the message of the 401."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return NO_KEY
    if len(key) > 512:
        return BAD_KEY
    if runtime.db.has_lookup:
        # SQLite: an indexed read on this thread's own connection, never waiting for a
        # writer (WAL), done here on the event loop; a thread hand-off would cost more.
        identity = authenticate(runtime.db, key)
    elif runtime.db.has_alookup:
        # PostgreSQL: on the event loop too, through an async connection of its own.
        identity = await authenticate_async(runtime.db, key)
    else:
        identity = await run_in_threadpool(authenticate, runtime.db, key)
    return BAD_KEY if identity is None else identity


async def gate_identity(scope: Scope, authorization: str) -> Identity | str:
    """For api.middleware.RequestGate: the key checked before the body is read."""
    runtime: Runtime = scope["app"].state.runtime
    return await key_identity(runtime, authorization)


async def identify(request: Request, runtime: Runtime, authorization: str | None) -> Identity:
    """The caller's identity from ``Authorization: Bearer <key>``, or 401. The request gate
    (api.middleware.RequestGate) has usually found it already, before the body was read."""
    found = getattr(request.state, "identity", None)
    if isinstance(found, Identity):
        return found
    identity = await key_identity(runtime, authorization)
    if isinstance(identity, str):
        raise ApiError(401, "UNAUTHORIZED", identity, headers={"WWW-Authenticate": "Bearer"})
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
