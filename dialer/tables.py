"""Import every model so that ``Base.metadata`` knows all tables (migrations, tests)."""

from __future__ import annotations

from sqlalchemy import MetaData

import consent.models
import dialer.models  # noqa: F401
from dialer.db import Base

_ = consent.models


def metadata() -> MetaData:
    return Base.metadata
