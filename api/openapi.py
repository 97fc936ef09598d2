"""The served OpenAPI document, finished so that code generators make working clients
(issue 20; tests/e2e/test_generated_clients.py generates a Python and a TypeScript client
from the served document and drives the whole flow with each):

* every error answer a route can give is documented with the error envelope
  (``ErrorEnvelope``): 401/403 on every keyed route, 422 everywhere a request is validated,
  413 where a body is taken, 404 where a path names a resource, 409 where an
  ``Idempotency-Key`` is taken (``IDEMPOTENCY_IN_PROGRESS``) and on the queue's per-call
  routes, 415 where several body kinds are taken, 503 where the database's absence is told;
* the enumerations are named components, one per meaning (``Channel``, ``CallResult``...),
  not one inline copy per field; purpose codes are the enum ``PurposeCode`` (the catalogue
  is loaded at start and fixed while the process runs; the server still answers an unknown
  code with 422 ``PURPOSE_UNKNOWN``);
* the headers: ``Idempotency-Key`` as a parameter of the routes that take it,
  ``X-Request-Id`` on every answer, ``Idempotent-Replayed`` on replays, ``Retry-After`` on
  an empty lease.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from fastapi import FastAPI

from api.idempotency import covered
from consent.schemas import ReassignedAnswerIn
from core.runtime import Runtime
from dialer.schemas import IntakeRowIn
from webhooks.schemas import DeliveryStatus, EventType

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
DESCRIPTIONS = {
    401: "Missing or unknown API key (`UNAUTHORIZED`)",
    403: "The key's role may not do this (`FORBIDDEN`)",
    404: "No such resource (`NOT_FOUND`)",
    409: "A conflict: `IDEMPOTENCY_IN_PROGRESS` (the first request with this "
         "Idempotency-Key still runs)",
    413: "The body is over this route's limit (`PAYLOAD_TOO_LARGE`, `details.limit_bytes`)",
    415: "Unsupported content type (`UNSUPPORTED_MEDIA_TYPE`)",
    422: "Invalid request (`VALIDATION_ERROR` with the offending fields, or the route's own "
         "code); `IDEMPOTENCY_KEY_REUSED` for a key used with another request",
    503: "The database is unreachable",
}

# Named enumerations: every inline enum with exactly these values becomes a reference.
NAMED_ENUMS: dict[str, list[str]] = {
    "Channel": ["autodialed_voice", "prerecorded_voice", "sms"],
    "ConsentMethod": ["written", "electronic_signature", "oral"],
    "RevocationSource": ["ivr_keypress", "agent", "sms_stop", "web", "letter", "in_person",
                         "voicemail", "email"],
    "CallResult": ["connected", "voicemail", "no_answer", "busy", "failed", "wrong_number",
                   "opted_out"],
    "IdentityIdentifier": ["date_of_birth", "address", "last_service_date", "member_id",
                           "invoice_number"],
    "CallStatus": ["queued", "leased", "completed", "refused", "withdrawn", "expired"],
    "RowStatus": ["queued", "refused", "invalid", "duplicate"],
    "Recording": ["allowed", "forbidden"],
    "RefusalStage": ["intake", "dispatch"],
    "ReassignedAnswer": ["yes", "no", "no_data"],
    "EventType": list(get_args(EventType)),
    "DeliveryStatus": list(get_args(DeliveryStatus)),
}
# Request fields that name a purpose and are refused (422) when the code is not in the
# catalogue. Requests only: an answer may name a purpose that a later policy dropped, which a
# client's enum would refuse to read. Not ``CheckIn.purpose``: a preflight check answers an
# unknown purpose with 200, ``allowed: false`` and the reason PURPOSE_UNKNOWN (API.md).
PURPOSE_FIELDS = {("CampaignIn", "purpose")}
CONSENT_PURPOSES = ("ConsentIn", "purposes")

_KEEP = ("description", "default", "title", "examples")


def install(app: FastAPI, runtime: Runtime) -> None:
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(plain(), sorted(runtime.policy.purposes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish(doc: dict[str, Any], purposes: list[str]) -> dict[str, Any]:
    comps = doc.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    _add_model(schemas, IntakeRowIn)
    _add_model(schemas, ReassignedAnswerIn)
    schemas["CsvUpload"] = {
        "title": "CsvUpload", "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "The CSV file (header row)"}},
    }
    _name_enums(doc, schemas)
    _purposes(schemas, purposes)
    comps["headers"] = {
        "X-Request-Id": {"description": "The request's id (the client's X-Request-Id when "
                         "well-formed, else generated): quote it in a support ticket",
                         "schema": {"type": "string"}},
        "Idempotent-Replayed": {"description": "`true` when this is the stored answer of an "
                                "earlier request with the same Idempotency-Key",
                                "schema": {"type": "string", "enum": ["true"]}},
        "Retry-After": {"description": "Seconds until the next queued call becomes eligible "
                        "(1-60), on an answer with no tasks",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 60}},
    }
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            _operation(path, method.upper(), op)
    return doc


def _add_model(schemas: dict[str, Any], model: Any) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas[model.__name__] = schema


def _name_enums(doc: dict[str, Any], schemas: dict[str, Any]) -> None:
    by_values = {tuple(sorted(v)): name for name, v in NAMED_ENUMS.items()}
    for name, values in NAMED_ENUMS.items():
        schemas[name] = {"title": name, "type": "string", "enum": values}

    def walk(node: Any, top: bool) -> Any:
        if isinstance(node, dict):
            values = node.get("enum")
            if not top and isinstance(values, list) and tuple(sorted(map(str, values))) in \
                    by_values:
                ref: dict[str, Any] = {
                    "$ref": f"#/components/schemas/{by_values[tuple(sorted(values))]}"}
                ref.update({k: node[k] for k in _KEEP if k in node and k != "title"})
                return ref
            return {k: walk(v, False) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, False) for v in node]
        return node

    for name in list(schemas):
        if name not in NAMED_ENUMS:
            schemas[name] = walk(schemas[name], True)
    doc["paths"] = walk(doc.get("paths", {}), False)


def _purposes(schemas: dict[str, Any], purposes: list[str]) -> None:
    if not purposes:
        return
    schemas["PurposeCode"] = {
        "title": "PurposeCode", "type": "string", "enum": purposes,
        "description": "A purpose of the policy's catalogue (allowed or not: a purpose not "
        "allowed is refused with PURPOSE_NOT_ALLOWED, with its rule)",
    }
    schemas["ConsentPurpose"] = {
        "title": "ConsentPurpose", "type": "string", "enum": ["*", *purposes],
        "description": "A purpose code, or `*` for every purpose",
    }
    for model, field in PURPOSE_FIELDS:
        prop = schemas.get(model, {}).get("properties", {}).get(field)
        if prop is not None:
            schemas[model]["properties"][field] = {
                "$ref": "#/components/schemas/PurposeCode",
                **{k: prop[k] for k in ("description", "examples") if k in prop}}
    model, field = CONSENT_PURPOSES
    prop = schemas.get(model, {}).get("properties", {}).get(field)
    if prop is not None and prop.get("type") == "array":
        prop["items"] = {"$ref": "#/components/schemas/ConsentPurpose"}


_PATH_PARAM = re.compile(r"\{[^}]+\}")
_QUEUE_CALL = re.compile(r"/v1/queue/\{call_id\}/(?:dial|outcome|release)")
_MANY_KINDS = re.compile(r"/v1/campaigns/\{campaign_id\}/calls(?:/upload)?|/v1/numbers/reassigned")


def _operation(path: str, method: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    keyed = path.startswith("/v1/") or path == "/metrics"
    wanted: set[int] = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
    if keyed:
        wanted |= {401, 403}
    else:
        wanted -= {401, 403, 413, 422}
    if path.startswith("/v1/"):
        wanted.add(422)
    if "requestBody" in op and path.startswith("/v1/"):
        wanted.add(413)
    else:
        wanted.discard(413)
    if _PATH_PARAM.search(path):
        wanted.add(404)
    if _QUEUE_CALL.fullmatch(path):
        wanted.add(409)
    if _MANY_KINDS.fullmatch(path):
        wanted.add(415)
    idempotent = covered(method, _PATH_PARAM.sub("x", path))
    if idempotent:
        wanted.add(409)
        op.setdefault("parameters", []).append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "1-255 printable ASCII characters: a retry with the same key, "
            "method, path and body gets the first answer again (`Idempotent-Replayed: "
            "true`); kept 24 hours, per API key" + (
                " (with `reserve: true` only)" if path == "/v1/check" else ""),
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        })
    for code in sorted(wanted):
        entry = responses.setdefault(str(code), {})
        if not entry.get("description") or entry["description"] == "Successful Response":
            entry["description"] = DESCRIPTIONS.get(code, "Error")
        entry["content"] = {"application/json": {"schema": ENVELOPE}}
    for status in list(responses):
        if status.isdigit() and int(status) >= 400 and int(status) not in wanted:
            del responses[status]
    for status, entry in responses.items():
        headers = entry.setdefault("headers", {})
        headers["X-Request-Id"] = {"$ref": "#/components/headers/X-Request-Id"}
        if idempotent and status.isdigit() and int(status) < 500 and int(status) != 409:
            headers["Idempotent-Replayed"] = {"$ref": "#/components/headers/Idempotent-Replayed"}
    if path == "/v1/queue/lease" and "200" in responses:
        responses["200"]["headers"]["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
