"""Shared set-up of the lifecycle tests: one topic, one in-process indexer, one store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.indexer.helpers import IndexerThread, running_indexer


def module_indexer(settings: Settings) -> Iterator[IndexerThread]:
    with running_indexer(settings) as ix:
        yield ix


def module_store(settings: Settings) -> Iterator[EventStore]:
    with EventStore(settings).open() as store:
        yield store


def append(store: EventStore, stream_id: str, count: int, **kw: Any) -> int:
    """Append ``count`` events ``E1``.. to the stream; its new version."""
    events = [NewEvent(type=f"E{i}", data={"i": i}) for i in range(1, count + 1)]
    return store.append(stream_id, events, **kw).to_version


def rows_of(database_url: str, stream_id: str) -> list[int]:
    """The versions of the stream's rows in ``events`` (hidden or not)."""
    with psycopg.connect(database_url) as conn:
        return [
            int(v)
            for (v,) in conn.execute(
                "SELECT version FROM events WHERE stream_id = %s ORDER BY version", (stream_id,)
            )
        ]
