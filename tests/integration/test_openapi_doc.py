"""The served OpenAPI document is written for code generators (issue 20, point 1; the
generated clients themselves: tests/e2e/test_generated_clients.py)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from api.idempotency import covered

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


def _doc(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def _ops(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method.upper(), op) for path, ops in doc["paths"].items()
            for method, op in ops.items()]


def test_every_error_answer_is_the_envelope(client: TestClient) -> None:
    for path, method, op in _ops(_doc(client)):
        errors = {s: r for s, r in op["responses"].items() if s.isdigit() and int(s) >= 400}
        assert errors, (method, path)
        for status, r in errors.items():
            assert r["content"] == {"application/json": {"schema": ENVELOPE}}, (method, path,
                                                                                 status)
        if path.startswith("/v1/"):
            assert {"401", "403", "422"} <= set(errors), (method, path)
        if "{" in path:
            assert "404" in errors, (method, path)
        if method == "GET":
            assert "413" not in errors, (method, path)
        for r in op["responses"].values():
            assert r["headers"]["X-Request-Id"] == {"$ref": "#/components/headers/X-Request-Id"}


def test_outcome_and_dial_document_what_a_dialer_must_read(client: TestClient) -> None:
    paths = _doc(client)["paths"]
    outcome = paths["/v1/queue/{call_id}/outcome"]["post"]["responses"]
    assert {"404", "409", "413", "422"} <= set(outcome)
    for route in ("dial", "release"):
        assert "409" in paths[f"/v1/queue/{{call_id}}/{route}"]["post"]["responses"]
    lease = paths["/v1/queue/lease"]["post"]["responses"]["200"]
    assert lease["headers"]["Retry-After"] == {"$ref": "#/components/headers/Retry-After"}


def test_named_schemas_and_no_inline_enums(client: TestClient) -> None:
    doc = _doc(client)
    schemas = doc["components"]["schemas"]
    assert not [n for n in schemas if "Json" in n or n.startswith(("SubmitCalls", "Body_"))]
    assert {"IntakeRowIn", "CsvUpload", "Channel", "CallResult", "PurposeCode",
            "ConsentPurpose"} <= set(schemas)
    assert "discharge_followup" in schemas["PurposeCode"]["enum"]
    assert schemas["ConsentPurpose"]["enum"][0] == "*"
    assert schemas["CampaignIn"]["properties"]["purpose"]["$ref"].endswith("/PurposeCode")

    def inline_enums(node: Any, where: str) -> list[str]:
        if isinstance(node, dict):
            found = [where] if "enum" in node and "title" not in node else []
            return found + [x for k, v in node.items() for x in inline_enums(v, f"{where}/{k}")]
        if isinstance(node, list):
            return [x for i, v in enumerate(node) for x in inline_enums(v, f"{where}/{i}")]
        return []

    # Every enum is a named component (a top-level schema with a title), referenced.
    nested = [w for name, s in schemas.items() for w in inline_enums(s.get("properties", {}),
                                                                     name)]
    nested += inline_enums(doc["paths"], "paths")
    assert not [w for w in nested if "Idempotent-Replayed" not in w], nested


def test_call_lists_json_on_the_path_csv_on_upload(client: TestClient) -> None:
    paths = _doc(client)["paths"]
    body = paths["/v1/campaigns/{campaign_id}/calls"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json"}
    assert body["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/IntakeRowIn"}
    upload = paths["/v1/campaigns/{campaign_id}/calls/upload"]["post"]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data", "application/octet-stream"}


def test_idempotency_key_is_a_parameter_where_it_is_taken(client: TestClient) -> None:
    for path, method, op in _ops(_doc(client)):
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        concrete = path.replace("{campaign_id}", "c").replace("{call_id}", "c")
        assert ("Idempotency-Key" in names) == covered(method, concrete), (method, path)
