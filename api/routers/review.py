"""Compliance review endpoints: refusal log, summary, CSV export, call log."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["compliance"])
