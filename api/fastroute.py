"""A FastAPI route class for the routes a dialer calls in its loop (lease, batched outcomes).

For each request FastAPI solves the dependency graph (runtime, bearer scheme, key, role),
decodes the body and validates it through a ``TypeAdapter``, then hands the endpoint to
the thread pool. For a route whose endpoint takes exactly ``(body, rt, who)`` and returns
its own ``Response``, :class:`DialerRoute` does the same steps directly (measured: about
6 % less server CPU per leased call, docs/performance.md, lease fifth pass):

1. a body sent as ``Content-Type: application/json`` is validated from its bytes by the
   endpoint's own model (``model_validate_json``);
2. the key and its role, by the same functions as the dependencies (``api.deps.identify``,
   ``api.deps.admit``): the same 401 and 403;
3. the endpoint runs in the thread pool, as FastAPI runs a ``def`` endpoint.

Anything else -- another or no content type, a body that is not valid JSON or not valid
for the model -- goes to FastAPI's own handler for the route, unchanged, before the key is
looked at, and is answered exactly as before (FastAPI answers a body it cannot decode with
422 even before it authenticates; a body valid as JSON but not for the model, after).
The route, its schema and its documentation are FastAPI's: only the handling of the
common, valid request is shorter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.deps import admit, identify
from core.keys import Role
from core.runtime import Runtime

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_PARAMS = ("body", "rt", "who")
# Off: every request goes to FastAPI's handler (tests/integration/test_fastroute.py compares
# the two answers request by request).
SHORT_PATH = True


def _shape(endpoint: Callable[..., Any]) -> tuple[type[BaseModel], frozenset[Role]] | None:
    """The body model and admitted roles of an endpoint ``(body: Model, rt, who: Role...) ->
    Response`` (one that makes its own response: no ``response_model`` serialisation to
    repeat), or None."""
    sig = inspect.signature(endpoint, eval_str=True)
    if tuple(sig.parameters) != _PARAMS or sig.return_annotation is not Response:
        return None
    model = sig.parameters["body"].annotation
    meta = getattr(sig.parameters["who"].annotation, "__metadata__", ())
    roles = next((getattr(m.dependency, "roles", None) for m in meta
                  if hasattr(m, "dependency")), None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or roles is None:
        return None
    return model, roles


class DialerRoute(APIRoute):
    """See the module's docstring. A route of another shape is handled by FastAPI alone."""

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        shape = _shape(self.endpoint)
        if shape is None:
            return standard
        model, roles = shape
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            if not SHORT_PATH or request.headers.get("content-type") != "application/json":
                return await standard(request)
            raw = await request.body()  # kept on the request: FastAPI's handler reads it again
            try:
                body = model.model_validate_json(raw)
            except ValidationError:
                return await standard(request)
            runtime: Runtime = request.app.state.runtime
            who = admit(
                await identify(request, runtime, request.headers.get("authorization")), roles
            )
            response: Response = await run_in_threadpool(endpoint, body=body, rt=runtime,
                                                         who=who)
            return response

        return handler
