"""Domain errors: services raise these; the API maps each kind to an HTTP status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    kind = "invalid"  # invalid | not_found | conflict | forbidden

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class Invalid(DomainError):
    kind = "invalid"


class NotFound(DomainError):
    kind = "not_found"


class Conflict(DomainError):
    kind = "conflict"


class Forbidden(DomainError):
    kind = "forbidden"


class TooLarge(DomainError):
    kind = "too_large"


# The HTTP status of each kind (api/errors.py answers with it; batch answers carry it).
KIND_STATUS = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "too_large": 413,
}
