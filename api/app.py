"""The FastAPI app factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api import docs, errors
from api import openapi as openapi_doc
from api.deps import gate_identity
from api.idempotency import IdempotencyMiddleware
from api.middleware import (
    InternalErrorMiddleware,
    RequestGate,
    SecurityHeadersMiddleware,
)
from api.routers import (
    calls,
    campaigns,
    compliance,
    consents,
    dnc,
    health,
    metrics,
    numbers,
    queue,
    review,
    texts,
    ui,
    webhooks,
)
from core.runtime import Runtime, build_runtime

log = logging.getLogger("callgate")

VERSION = "0.1.0"
DESCRIPTION = """
callgate lets an outbound healthcare call through only when the law and the
organisation's policy allow it, and records why each call was made or refused.

Authenticate with `Authorization: Bearer <api key>` (create one with
`callgate keys create --role ROLE --name NAME`). Every error body is
`{"error": {"code": "UPPER_SNAKE", "message": "...", "details": ...}}`.
No message ever contains a phone number or a patient reference.
"""


def _operation_id(route: APIRoute) -> str:
    return route.name


def record_start(runtime: Runtime) -> None:
    """A served process starts: its policy load is audited (API.md: policy loads are in the
    log), and the audit keys are loaded (created, with a warning, on a first start)."""
    from core import auditlog

    auditlog.signer(runtime)
    runtime.pseudonyms()
    settings = runtime.settings
    with runtime.write("system:start") as uow:
        uow.audit("policy.loaded", f"policy:{runtime.policy_version}", {
            "file": str(settings.policy_file) if settings.policy_file else "(shipped default)",
            "version": runtime.policy.version,
        })


def create_app(
    runtime: Runtime | None = None, *, migrate: bool = True, scheduler: bool = False,
    deliveries: bool | None = None,
) -> FastAPI:
    """``scheduler``: the served process's jobs and helpers; ``deliveries``: its webhook
    delivery worker (default: with the scheduler)."""
    runtime = runtime or build_runtime()
    deliver = scheduler if deliveries is None else deliveries

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = None
        worker = None
        if deliver:
            from webhooks import worker as webhook_worker

            worker = webhook_worker.start(runtime)
        if scheduler:
            from dialer import audit_helper
            from dialer.jobs import start_scheduler

            record_start(runtime)
            audit_helper.start(runtime)
            jobs = start_scheduler(runtime)
            if runtime.settings.intake_parallel_min_rows:
                # A served process starts its intake helper now, not on the first big list.
                from dialer.intake import pool as intake_pool

                intake_pool.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            if jobs is not None:
                jobs.shutdown(wait=False)
                from dialer.audit_helper import AuditHelper

                runtime.state(AuditHelper).close()
            # The sign-in refusals counted in the minute under way (review.sessions).
            from review.sessions import flush_login_counts

            flush_login_counts(runtime)

    if migrate:
        from core.migrate import upgrade

        upgrade(runtime.db.url)

    app = FastAPI(
        title="callgate",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        responses=errors.ERROR_RESPONSES,
        docs_url=None,  # api.docs: the same pages without a CDN or inline script
        redoc_url=None,
    )
    app.state.runtime = runtime
    errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    # The dialers' routes first: a request is matched against routes in order (no path of
    # one router is another's).
    for module in (queue, consents, dnc, campaigns, calls, review, compliance, numbers,
                   webhooks, texts):
        app.include_router(module.router, prefix="/v1")
    app.include_router(ui.router)
    app.mount(ui.STATIC_PATH, ui.static_files(), name="ui-static")
    docs.install(app)
    openapi_doc.install(app, runtime)
    # Added first = innermost: errors are answered inside the body limit and the headers.
    app.add_middleware(InternalErrorMiddleware)
    # Idempotency-Key (api/idempotency.py): inside the gate (the key is known, the body
    # limit holds), outside every route.
    app.add_middleware(IdempotencyMiddleware)
    # The key, then the route's body limit, before any body is read (api/middleware.py).
    app.add_middleware(RequestGate, max_bytes=runtime.settings.max_body_bytes,
                       authenticate=gate_identity)
    app.add_middleware(SecurityHeadersMiddleware, https=runtime.settings.https)
    return app

