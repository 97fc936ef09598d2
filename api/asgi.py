"""The ASGI entry point used by ``callgate serve`` (``api.asgi:app``): built from the
environment; the parent process has already migrated the database."""

from __future__ import annotations

import gc
import logging

from api.app import create_app
from dialer.rules import zones


def _area_table_from_a_helper() -> None:
    """The area-code → state table, built in a short-lived process: the geocoder data it is
    read from (~100 MB for every country and language) never enters this one."""
    from dialer.intake.pool import helper_pool

    try:
        with helper_pool() as ex:
            zones.use_area_table(ex.submit(zones.area_table).result(timeout=120))
    except Exception as exc:  # no child process possible here: build it in this one
        logging.getLogger("callgate.api").warning(
            "area-code table built in-process (%s): the geocoder's data stays loaded",
            type(exc).__name__,
        )
        zones.use_area_table(zones.area_table())


_area_table_from_a_helper()

app = create_app(migrate=False, scheduler=True)

# Everything allocated at start-up (policy, catalogues, phone metadata) is long-lived: keep
# the cyclic garbage collector from walking it again and again during large intakes.
gc.collect()
gc.freeze()
# And collect the youngest generation every 50,000 net allocations instead of every 700: an
# intake allocates millions of short-lived objects, nearly none in reference cycles, and the
# default thresholds spent about a quarter of a 100,000-row intake in the collector
# (measured: 15.7 s → 12.5 s in-process). Full collections stay rare (every 20 x 100).
gc.set_threshold(50_000, 20, 100)
