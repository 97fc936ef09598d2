"""The audit log (API.md "Audit log: a verifiable log") and the access report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import Compliance, RuntimeDep
from consent.schemas import IsoDatetime
from review import access
from review import audit as audit_log
from review.schemas import (
    AccessReport,
    AuditEntriesPage,
    AuditEntryOut,
    AuditKeyOut,
    AuditVerifyOut,
    CheckpointOut,
    ConsistencyProofOut,
    InclusionProofOut,
)

router = APIRouter(tags=["compliance"])

NonNegative = Annotated[int, Query(ge=0, le=2**62)]


@router.get(
    "/audit/checkpoint",
    name="audit_checkpoint",
    response_model=CheckpointOut,
    summary="The latest signed checkpoint of the audit log (or the one made at ?size=N)",
    responses={404: {"description": "No checkpoint yet, or none was made at that size"}},
)
def audit_checkpoint(
    rt: RuntimeDep,
    who: Compliance,
    size: Annotated[int | None, Query(ge=0, le=2**62,
                                      description="The checkpoint made at this size")] = None,
) -> CheckpointOut:
    return audit_log.checkpoint(rt, size)


@router.get(
    "/audit/key",
    name="audit_key",
    response_model=AuditKeyOut,
    summary="The log's verifier key (C2SP vkey), to publish out of band and pin",
)
def audit_key(rt: RuntimeDep, who: Compliance) -> AuditKeyOut:
    return audit_log.verifier_key(rt)


@router.get(
    "/audit/entries",
    name="audit_entries",
    response_model=AuditEntriesPage,
    summary="Integrated entries in index order, from ?from= (an empty list past the end)",
)
def audit_entries(
    rt: RuntimeDep,
    who: Compliance,
    from_: Annotated[int, Query(alias="from", ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=audit_log.MAX_ENTRIES)] = 100,
) -> AuditEntriesPage:
    return audit_log.list_entries(rt, from_, limit)


@router.get(
    "/audit/entries/{index}",
    name="audit_entry",
    response_model=AuditEntryOut,
    summary="One entry, with the exact leaf text that was hashed",
    responses={404: {"description": "No sealed entry has that index (yet)"}},
)
def audit_entry(
    rt: RuntimeDep, who: Compliance, index: Annotated[int, Path(ge=0, le=2**62)]
) -> AuditEntryOut:
    return audit_log.get_entry(rt, index)


@router.get(
    "/audit/proof/inclusion",
    name="audit_inclusion_proof",
    response_model=InclusionProofOut,
    summary="RFC 9162 inclusion proof of leaf ?index= in the tree of ?size=",
)
def audit_inclusion_proof(
    rt: RuntimeDep, who: Compliance, index: NonNegative, size: NonNegative
) -> InclusionProofOut:
    return audit_log.inclusion(rt, index, size)


@router.get(
    "/audit/proof/consistency",
    name="audit_consistency_proof",
    response_model=ConsistencyProofOut,
    response_model_by_alias=True,
    summary="RFC 9162 consistency proof from the tree of ?from= to that of ?to=",
)
def audit_consistency_proof(
    rt: RuntimeDep,
    who: Compliance,
    from_: Annotated[int, Query(alias="from", ge=0, le=2**62)],
    to: NonNegative,
) -> ConsistencyProofOut:
    return audit_log.consistency(rt, from_, to)


@router.get(
    "/audit/verify",
    name="verify_audit",
    response_model=AuditVerifyOut,
    summary="Check what the log gained since the last verified checkpoint (incremental)",
)
def verify_audit(rt: RuntimeDep, who: Compliance) -> AuditVerifyOut:
    return audit_log.verify(rt)


@router.get(
    "/access-report",
    name="access_report",
    response_model=AccessReport,
    summary="Who looked at this patient's data, when, through what (the report is audited)",
)
def access_report(
    rt: RuntimeDep,
    who: Compliance,
    phone: Annotated[str | None, Query(max_length=40, description="The patient's number")]
    = None,
    patient_ref: Annotated[
        str | None,
        Query(max_length=128, description="Or the patient: every number their consents and "
              "calls name"),
    ] = None,
    since: Annotated[IsoDatetime | None, Query(description="From this instant, inclusive")]
    = None,
    until: Annotated[IsoDatetime | None, Query(description="Up to this instant, exclusive")]
    = None,
    limit: Annotated[int, Query(ge=1, le=access.MAX_LIMIT)] = access.DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AccessReport:
    return access.access_report(rt, who, phone=phone, patient_ref=patient_ref, since=since,
                                until=until, limit=limit, cursor=cursor)

