"""What happened on the call itself, checked against what the task said: pure.

API.md "Recording and identity verification". Both are flags, not refusals: the call
happened, the outcome is accepted, and a compliance reviewer sees the mark (call log, its
CSV, the dashboard's flagged calls with the agent).

* RECORDING_WITHOUT_CONSENT: the outcome says ``recorded`` although the task said
  ``recording: forbidden`` (no written consent covering the call has ``recording: true``;
  18 U.S.C. 2511(2)(d), all-party-consent state laws such as Cal. Penal Code 632).
* IDENTITY_NOT_VERIFIED: ``phi_disclosed`` with fewer distinct ``identity_verified_with``
  identifiers than the task's ``identity_identifiers`` (45 CFR 164.514(h): verify the
  identity of a person before disclosing protected health information).
"""

from __future__ import annotations

from collections.abc import Iterable

from config.reasons import Flag


def call_flags(
    *,
    recording_allowed: bool,
    identity_required: int,
    recorded: bool,
    phi_disclosed: bool,
    identity_verified_with: Iterable[str],
) -> list[str]:
    """The flags an outcome earns on the call itself, in a stable order."""
    out: list[str] = []
    if recorded and not recording_allowed:
        out.append(Flag.RECORDING_WITHOUT_CONSENT.value)
    if phi_disclosed and len(set(identity_verified_with)) < identity_required:
        out.append(Flag.IDENTITY_NOT_VERIFIED.value)
    return out
