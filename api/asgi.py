"""The ASGI entry point used by ``callgate serve`` (``api.asgi:app``): built from the
environment; the parent process has already migrated the database."""

from __future__ import annotations

from api.app import create_app

app = create_app(migrate=False, scheduler=True)
