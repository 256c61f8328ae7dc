"""``SyncStore`` offers everything ``Store`` does, blocking; its change feed is a
blocking iterator."""

from __future__ import annotations

import inspect
import threading

from pgactors import Store, SyncStore
from pgactors.store import Transaction
from pgactors.sync import SyncChangeStream, SyncTransaction


def _public(cls: type) -> dict[str, inspect.Signature | None]:
    names = {}
    for name, value in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        names[name] = inspect.signature(value) if callable(value) else None
    return names


def _parameters(signature: inspect.Signature | None) -> list[str]:
    if signature is None:
        return []
    return [p for p in signature.parameters if p not in ("self", "cls")]


def test_the_blocking_twins_offer_every_public_name_with_the_same_parameters() -> None:
    for async_cls, sync_cls in ((Store, SyncStore), (Transaction, SyncTransaction)):
        async_names, sync_names = _public(async_cls), _public(sync_cls)
        missing = sorted(set(async_names) - set(sync_names))
        assert not missing, f"{sync_cls.__name__} lacks {missing}"
        for name, signature in async_names.items():
            assert _parameters(sync_names[name]) == _parameters(signature), name


def test_blocking_store_operations_and_change_feed(pg_store_sync: SyncStore) -> None:
    store = pg_store_sync
    assert store.schema_version() is not None
    assert all(present for _, _, present in store.verify_schema())
    assert store.info().schema_version == store.schema_version()
    name = store.create_index("User", "level")
    assert store.indexes() == [("User", "level", name)]
    assert name in store.explain("User", {"level": 3})  # the plan uses the index
    assert store.drop_index("User", "level") and store.indexes() == []

    with store.changes("User") as stream:
        assert isinstance(stream, SyncChangeStream)
        writer = threading.Thread(
            target=lambda: [store.save("User", f"u{n}", {"level": n}) for n in range(3)]
        )
        writer.start()
        seen = []
        for change in stream:
            seen.append((change.id, change.op))
            if len(seen) == 3:
                break
        writer.join()
    assert seen == [("u0", "save"), ("u1", "save"), ("u2", "save")]
    assert stream.position is None  # closed
    assert store.sequence_changes() >= 0
    assert store.feed_stats().last_position >= 3
    assert store.metrics().operations["save"].count == 3
    assert next(iter(store.export_lines("User"))).startswith('{"type":"User"')
    encoded = store.encode({"level": 9})
    assert store.save("User", "u9", encoded).data == {"level": 9}
    store.drop_schema()
    assert store.schema_version() is None
