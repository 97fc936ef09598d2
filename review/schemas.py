"""What the refusal log and the call log answer (API.md "Compliance"), separate from the
tables: each item as a reviewer sees it, the masked phone unless unmasked."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dialer.schemas import ReasonOut

Stage = Literal["intake", "dispatch"]


class RefusalItem(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 4182,
                    "at": "2026-11-24T17:00:00Z",
                    "call_id": "0c4b1a9e-5d0e-4a53-9f3e-2d1c7b8e6a10",
                    "external_id": "enc-778",
                    "campaign_id": "7d2f6c1b-8a4e-4f0d-b5c9-1e3a2d4c6b8f",
                    "phone": "+1314555****",
                    "stage": "intake",
                    "status": "refused",
                    "code": "NO_CONSENT",
                    "reasons": [
                        {
                            "code": "NO_CONSENT",
                            "message": "no written auto-dialer consent is on file for this "
                            "number",
                            "rule": "47 CFR 64.1200(a)(1)-(2); FCC 15-72 paras 141-147 "
                            "(prior express written consent)",
                        }
                    ],
                    "policy_version": "2026-11-01+3f9a1c2b4d5e",
                    "row": 12,
                }
            ]
        }
    )

    id: int
    at: datetime
    call_id: str | None
    external_id: str | None
    campaign_id: str | None
    phone: str | None = Field(description="Masked (+1314555****) unless unmask=true")
    stage: str = Field(description="intake | dispatch")
    status: str = Field(description="refused | invalid | expired | withdrawn")
    code: str = Field(description="The first (deciding) reason's code")
    reasons: list[ReasonOut]
    policy_version: str
    row: int | None = Field(description="1-based row of the submitted list (intake only)")


class RefusalPage(BaseModel):
    items: list[RefusalItem]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page"
    )


class CodeCount(BaseModel):
    code: str
    count: int


class CampaignCount(BaseModel):
    campaign_id: str | None
    count: int


class StageCount(BaseModel):
    stage: str
    count: int


class DayCount(BaseModel):
    day: str = Field(description="UTC date, YYYY-MM-DD")
    count: int


class RefusalSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "since": "2026-11-01T00:00:00Z",
                    "until": None,
                    "total": 3,
                    "by_code": [
                        {"code": "NO_CONSENT", "count": 2},
                        {"code": "DO_NOT_CALL", "count": 1},
                        {"code": "DEADLINE_PASSED", "count": 1},
                    ],
                    "by_campaign": [
                        {"campaign_id": "7d2f6c1b-8a4e-4f0d-b5c9-1e3a2d4c6b8f", "count": 3}
                    ],
                    "by_stage": [{"stage": "intake", "count": 3}],
                    "by_day": [{"day": "2026-11-24", "count": 3}],
                }
            ]
        }
    )

    since: datetime | None
    until: datetime | None
    total: int = Field(description="Refusal log rows in the range")
    by_code: list[CodeCount] = Field(
        description="Every reason counted: a row with two reasons counts toward both codes"
    )
    by_campaign: list[CampaignCount]
    by_stage: list[StageCount]
    by_day: list[DayCount]


class CallLogItem(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "b1e0d7c4-3f2a-4c6e-9a8b-7d5e4f3a2b1c",
                    "call_id": "0c4b1a9e-5d0e-4a53-9f3e-2d1c7b8e6a10",
                    "campaign_id": "7d2f6c1b-8a4e-4f0d-b5c9-1e3a2d4c6b8f",
                    "phone": "+1314555****",
                    "kind": "lease",
                    "state": "reported",
                    "counted": True,
                    "dialer_id": "acme-1",
                    "agent_id": "A-17",
                    "agent_name": "Dana",
                    "disclosed_callback_number": "+13145550199",
                    "started_at": "2026-11-24T17:01:00Z",
                    "ended_at": "2026-11-24T17:03:10Z",
                    "result": "connected",
                    "flags": [],
                    "at": "2026-11-24T17:00:30Z",
                    "recorded_at": "2026-11-24T17:03:12Z",
                    "recording": "forbidden",
                    "identity_identifiers": 2,
                    "recorded": False,
                    "phi_disclosed": True,
                    "identity_verified_with": ["date_of_birth", "address"],
                }
            ]
        }
    )

    id: str
    call_id: str | None
    campaign_id: str | None
    phone: str = Field(description="Masked (+1314555****) unless unmask=true")
    kind: str = Field(description="lease | manual")
    state: str = Field(description="live | reported | released | expired | withdrawn | manual")
    counted: bool
    dialer_id: str | None
    agent_id: str | None
    agent_name: str | None
    disclosed_callback_number: str | None
    started_at: datetime | None
    ended_at: datetime | None
    result: str | None
    flags: list[str] = Field(description="e.g. AGENT_ID_MISSING, CALLBACK_MISMATCH")
    at: datetime = Field(description="When the attempt was leased or reserved")
    recorded_at: datetime | None = Field(description="When its outcome was reported")
    # On the call itself (API.md "Recording and identity verification").
    recording: Literal["allowed", "forbidden"] | None = Field(
        default=None, description="What the task said (null: a manual reservation, or an "
        "attempt of before this field)")
    identity_identifiers: int | None = Field(
        default=None, description="What the task said: identifiers to verify before "
        "disclosing health information")
    recorded: bool | None = Field(default=None, description="As the outcome reported")
    phi_disclosed: bool | None = Field(default=None, description="As the outcome reported")
    identity_verified_with: list[str] = Field(
        default_factory=list, description="As the outcome reported")


class CallLogPage(BaseModel):
    items: list[CallLogItem]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page"
    )


# --- the audit log (API.md "Audit log: a verifiable log", "Access report") ------------------

_HEX64 = "3f1c9a0e5b2d7c4a8e6f0b1d3c5a7e9f2b4d6c8a0e1f3b5d7c9a2e4f6b8d0c1a"


class CheckpointOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "size": 1234,
                    "root_hash": _HEX64,
                    "at": "2026-11-24T17:00:05Z",
                    "origin": "callgate.example.org/audit",
                    "key_name": "callgate.example.org/audit",
                    "public_key": "ZmFrZSBwdWJsaWMga2V5IGZvciB0aGUgZXhhbXBsZSE=",
                    "note": "callgate.example.org/audit\n1234\n"
                    "PxyaDlstfEqObwsdPFp+nytNbIoOHztdfJouT2uNDBo=\n\n"
                    "\u2014 callgate.example.org/audit AbCdEf...==\n",
                }
            ]
        }
    )

    size: int = Field(description="Leaves in the tree the checkpoint commits to")
    root_hash: str = Field(description="The RFC 9162 root, hex")
    at: datetime = Field(description="When it was signed")
    origin: str
    key_name: str
    public_key: str = Field(description="Base64 of the 32-byte Ed25519 public key")
    note: str = Field(description="The C2SP tlog-checkpoint in C2SP signed-note form")


class AuditKeyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "vkey": "callgate.example.org/audit+1a2b3c4d+AQ...",
                    "name": "callgate.example.org/audit",
                    "key_id": "1a2b3c4d",
                    "origin": "callgate.example.org/audit",
                    "public_key": "ZmFrZSBwdWJsaWMga2V5IGZvciB0aGUgZXhhbXBsZSE=",
                }
            ]
        }
    )

    vkey: str = Field(description="C2SP verifier key: <name>+<hex key id>+<base64(0x01 || key)>")
    name: str
    key_id: str = Field(description="4 bytes, hex")
    origin: str
    public_key: str = Field(description="Base64 of the 32-byte Ed25519 public key")


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "index": 41,
                    "at": "2026-11-24T17:00:00.000000+00:00",
                    "actor": "key:2b4c6d8e-0f1a-4b3c-8d5e-7f9a1b3c5d7e",
                    "kind": "call.leased",
                    "subject": "call:0c4b1a9e-5d0e-4a53-9f3e-2d1c7b8e6a10",
                    "payload": {"lease": "5e7f9a1b-...", "dialer": "acme-1"},
                    "policy_version": "2026-11-01+3f9a1c2b4d5e",
                    "leaf": '{"actor":"key:2b4c...","at":"2026-11-24T17:00:00.000000+00:00",'
                    '"index":41,...}',
                    "leaf_hash": _HEX64,
                    "erased_at": None,
                }
            ]
        }
    )

    index: int = Field(description="The leaf's position, from 0")
    at: str = Field(description="As hashed: UTC, microseconds, +00:00")
    actor: str
    kind: str
    subject: str
    payload: dict[str, Any] | None = Field(description="null once erased past retention")
    policy_version: str
    leaf: str | None = Field(
        description="The canonical JSON hashed as the leaf (null once the payload is erased)"
    )
    leaf_hash: str = Field(description="SHA-256(0x00 || leaf), hex; kept after erasure")
    erased_at: datetime | None = None


class AuditEntriesPage(BaseModel):
    items: list[AuditEntryOut]


class InclusionProofOut(BaseModel):
    index: int
    size: int
    leaf_hash: str
    hashes: list[str] = Field(description="RFC 9162 §2.1.3 PATH(index, D[size]), hex")


class ConsistencyProofOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    hashes: list[str] = Field(description="RFC 9162 §2.1.4 PROOF(from, D[to]), hex")


class CheckpointRef(BaseModel):
    size: int
    root_hash: str


class AuditVerifyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"ok": True, "entries": 1234,
                 "checkpoint": {"size": 1234, "root_hash": _HEX64}},
                {"ok": False, "entries": 1200,
                 "checkpoint": {"size": 1234, "root_hash": _HEX64}, "index": 1207,
                 "problem": "entry 1207: its content does not match its leaf hash"},
            ]
        }
    )

    ok: bool
    entries: int = Field(description="The first `entries` leaves are verified")
    checkpoint: CheckpointRef | None = Field(
        description="The latest signed checkpoint (null before the first)"
    )
    behind: int = Field(default=0, description="Leaves of that checkpoint not checked yet")
    index: int | None = Field(default=None, description="The first index that disagrees")
    problem: str | None = None


class AccessItem(BaseModel):
    at: datetime
    actor: str
    key_name: str | None = Field(description="The API key's name (null for a system actor)")
    kind: str = Field(description="patient_data.read | patient_data.unmask | ...")
    via: str = Field(description="The endpoint or dashboard page")
    index: int | None = Field(description="The audit entry's leaf index (null until sealed)")


class AccessReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"at": "2026-11-24T17:03:00Z",
                         "actor": "key:2b4c6d8e-0f1a-4b3c-8d5e-7f9a1b3c5d7e",
                         "key_name": "reviewer-dana", "kind": "patient_data.read",
                         "via": "GET /v1/consents", "index": 1207}
                    ],
                    "next_cursor": None,
                }
            ]
        }
    )

    items: list[AccessItem]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next (later) page"
    )
