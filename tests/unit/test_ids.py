"""config.ids: time-ordered UUIDs."""

from __future__ import annotations


def test_new_ids_are_version_7_uuids_in_time_order() -> None:
    import time
    import uuid

    from config.ids import new_id

    ids = []
    for _ in range(50):
        ids.append(new_id())
        time.sleep(0.002)
    for i in ids:
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 7 and u.variant == uuid.RFC_4122
        ms = int(i.replace("-", "")[:12], 16)
        assert abs(ms / 1000 - time.time()) < 60
    assert ids == sorted(ids)  # a ms apart or more: ordered
    assert len(set(new_id() for _ in range(10_000))) == 10_000
