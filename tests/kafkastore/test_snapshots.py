"""Snapshots (docs/http.md "Stream lifecycle"): save, latest, load, above-the-head refused, served
past a truncation, gone with a tombstone; Python API and HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from kafkastore.client import AsyncEventStore, EventStore
from kafkastore.config import Settings
from kafkastore.errors import SnapshotAboveHead, SnapshotNotFound, StreamDeleted
from kafkastore.http import create_app
from kafkastore.records import NewEvent
from tests.indexer.helpers import IndexerThread
from tests.kafkastore import lifecycle_support as support
from tests.support import unique
from tests.support.topics import module_settings


@pytest.fixture(scope="module")
def store_settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    yield from module_settings(kafka_bootstrap, database_url)


@pytest.fixture(scope="module")
def indexer(store_settings: Settings) -> Iterator[IndexerThread]:
    yield from support.module_indexer(store_settings)


@pytest.fixture(scope="module")
def store(store_settings: Settings, indexer: IndexerThread) -> Iterator[EventStore]:
    yield from support.module_store(store_settings)


def test_load_answers_the_latest_snapshot_and_the_events_after_it(store: EventStore) -> None:
    stream = unique("Snap")
    support.append(store, stream, 5)
    store.read_stream(stream, min_version=5, timeout=30)
    store.save_snapshot(stream, 2, "Totals", {"sum": 3})
    store.save_snapshot(stream, 4, "Totals", {"sum": 10})

    latest = store.latest_snapshot(stream)
    loaded = store.load(stream)

    assert (latest.version, latest.type, latest.data) == (4, "Totals", {"sum": 10})
    assert latest.created_at is not None
    assert loaded.snapshot == latest
    assert [e.version for e in loaded.events] == [5] and loaded.version == 5
    with pytest.raises(SnapshotAboveHead) as above:
        store.save_snapshot(stream, 6, "Totals", {})
    assert above.value.current == 5
    with pytest.raises(SnapshotNotFound):
        store.latest_snapshot(unique("Snap"))
    plain = unique("Plain")
    support.append(store, plain, 2)
    store.read_stream(plain, min_version=2, timeout=30)
    without = store.load(plain)
    assert without.snapshot is None and [e.version for e in without.events] == [1, 2]


def test_a_snapshot_of_a_truncated_away_version_is_still_served(store: EventStore) -> None:
    stream = unique("Snap")
    support.append(store, stream, 6)
    store.read_stream(stream, min_version=6, timeout=30)
    store.save_snapshot(stream, 3, "State", {"upto": 3})

    store.set_metadata(stream, truncate_before=5)

    assert store.latest_snapshot(stream).version == 3
    loaded = store.load(stream)
    assert loaded.snapshot is not None and loaded.snapshot.data == {"upto": 3}
    # Event 4 is truncated away: the state continues from what is readable.
    assert [e.version for e in loaded.events] == [5, 6]


def test_a_tombstone_removes_the_snapshots_and_refuses_new_ones(
    store: EventStore, store_settings: Settings
) -> None:
    stream = unique("Snap")
    support.append(store, stream, 2)
    store.save_snapshot(stream, 2, "State", {})

    store.delete_stream(stream, hard=True)

    with psycopg.connect(store_settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM snapshots WHERE stream_id = %s", (stream,))
        assert row.fetchone() == (0,)
    with pytest.raises(StreamDeleted):
        store.latest_snapshot(stream)
    with pytest.raises(StreamDeleted):
        store.save_snapshot(stream, 1, "State", {})


def test_snapshot_routes_answer_201_200_404_and_409(
    store_settings: Settings, indexer: IndexerThread
) -> None:
    stream = unique("Snap")
    with TestClient(create_app(store_settings)) as client:
        assert client.get(f"/streams/{stream}/snapshots/latest").status_code == 404
        assert client.get(f"/streams/{stream}/snapshots/latest").json()["error"] == (
            "snapshot_not_found"
        )
        client.post(f"/streams/{stream}", json={"events": [{"type": "E", "data": {}}] * 2})
        put = client.put(
            f"/streams/{stream}/snapshots", json={"version": 2, "type": "S", "data": {"n": 2}}
        )
        assert put.status_code == 201, put.text
        above = client.put(
            f"/streams/{stream}/snapshots", json={"version": 3, "type": "S", "data": {}}
        )
        assert above.status_code == 409
        assert (above.json()["error"], above.json()["current_version"]) == (
            "snapshot_above_head",
            2,
        )
        got = client.get(f"/streams/{stream}/snapshots/latest")
        assert got.status_code == 200
        body = got.json()
        assert {k: body[k] for k in ("stream_id", "version", "type", "data")} == {
            "stream_id": stream,
            "version": 2,
            "type": "S",
            "data": {"n": 2},
        }
        assert body["created_at"]


def test_the_async_store_has_the_lifecycle_methods_with_the_same_rules(
    store_settings: Settings, indexer: IndexerThread
) -> None:
    stream = unique("Async")

    async def scenario() -> tuple[int, int, list[int], int]:
        async with AsyncEventStore(store_settings) as store:
            metadata = await store.set_metadata(stream, expected_metadata_version=0, max_count=2)
            await store.append(stream, [NewEvent(type="E") for _ in range(4)])
            await store.read_stream(stream, min_version=4, timeout=30)
            await store.save_snapshot(stream, 3, "S", {"n": 3})
            loaded = await store.load(stream)
            await store.delete_stream(stream, expected_version=4, hard=True)
            with pytest.raises(StreamDeleted):
                await store.get_metadata(stream)
            assert loaded.snapshot is not None
            return (
                metadata.metadata_version,
                loaded.snapshot.version,
                [e.version for e in loaded.events],
                loaded.version,
            )

    assert asyncio.run(scenario()) == (1, 3, [4], 4)
