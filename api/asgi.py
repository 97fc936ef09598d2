"""The ASGI entry point used by ``callgate serve`` (``api.asgi:app``): built from the
environment; the parent process has already migrated the database."""

from __future__ import annotations

import gc

from api.app import create_app

app = create_app(migrate=False, scheduler=True)

# Everything allocated at start-up (policy, catalogues, phone metadata) is long-lived: keep
# the cyclic garbage collector from walking it again and again during large intakes.
gc.collect()
gc.freeze()
