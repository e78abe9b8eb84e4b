"""The apply step with hand-built batches: gap-free positions, duplicates, conflicts, phantoms."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest

from consumers.runtime import PhantomRecord
from indexer import projection
from kafkastore.codec import WireEvent
from kafkastore.errors import IntegrityError
from kafkastore.records import BINARY_CONTENT_TYPE
from kafkastore.streams import category_of
from kafkastore.verdict import PhantomReason


@dataclass(frozen=True)
class Batch:
    topic: str
    partition: int
    wire: Sequence[WireEvent]
    phantoms: Sequence[PhantomRecord] = field(default=())


def event(
    stream_id: str, version: int, offset: int, *, raw: bytes = b'{"n":1}', **kw: Any
) -> WireEvent:
    metadata = kw.get("metadata", {})
    return WireEvent(
        event_id=kw.get("id", uuid.uuid4()),
        stream_id=stream_id,
        version=version,
        type=kw.get("type", "Happened"),
        content_type=kw.get("content_type", "application/json"),
        time=datetime.now(UTC),
        write_id=uuid.uuid4(),
        xid=1000 + offset,
        sysid="1",
        metadata=metadata,
        metadata_json=orjson.dumps(metadata) if metadata else None,
        value=raw,
        partition=kw.get("partition", 0),
        offset=offset,
    )


def wire(stream_id: str, version: int, *, xid: int) -> WireEvent:
    return WireEvent(
        event_id=uuid.uuid4(),
        stream_id=stream_id,
        version=version,
        type="Happened",
        content_type="application/json",
        time=datetime.now(UTC),
        write_id=uuid.uuid4(),
        xid=xid,
        sysid="1",
        metadata={},
        metadata_json=None,
        value=b"{}",
        partition=0,
        offset=2,
    )


def apply(url: str, batches: Sequence[Batch]) -> projection.Applied:
    with psycopg.connect(url) as conn:
        result = projection.apply(conn, batches)
        conn.commit()
        return result


def test_applied_events_get_gap_free_positions_in_batch_order(own_database: str) -> None:
    s = f"Order-{uuid.uuid4().hex}"
    first = apply(own_database, [Batch("t", 0, [event(s, 1, 0), event(s, 2, 1)])])
    second = apply(own_database, [Batch("t", 0, [event(s, 3, 2)])])
    assert (first.indexed, first.last_position) == (2, 2)
    assert (second.indexed, second.last_position) == (1, 3)
    with psycopg.connect(own_database) as conn:
        rows = conn.execute(
            "SELECT global_position, version, category FROM events ORDER BY 1"
        ).fetchall()
        head = conn.execute("SELECT last_position FROM index_head").fetchone()
    assert rows == [(1, 1, "Order"), (2, 2, "Order"), (3, 3, "Order")]
    assert head == (3,)


def test_exact_duplicates_are_absorbed_without_using_positions(own_database: str) -> None:
    s = f"Dup-{uuid.uuid4().hex}"
    e1, e2 = event(s, 1, 0), event(s, 2, 1)
    apply(own_database, [Batch("t", 0, [e1])])
    again = apply(own_database, [Batch("t", 0, [e1, e2, e2])])
    assert (again.indexed, again.duplicates, again.last_position) == (1, 2, 2)
    with psycopg.connect(own_database) as conn:
        rows = conn.execute("SELECT global_position, event_id FROM events ORDER BY 1").fetchall()
    assert rows == [(1, e1.event_id), (2, e2.event_id)]


def test_a_different_event_at_an_indexed_version_is_an_integrity_error(database_url: str) -> None:
    s = f"Conflict-{uuid.uuid4().hex}"
    apply(database_url, [Batch("t", 0, [event(s, 1, 0)])])
    with pytest.raises(IntegrityError, match="index conflicts"):
        apply(database_url, [Batch("t", 0, [event(s, 1, 5)])])
    with pytest.raises(IntegrityError, match="two real events"):
        apply(database_url, [Batch("t", 0, [event(s, 2, 6), event(s, 2, 7)])])
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM events WHERE stream_id = %s", (s,)).fetchone()
    assert count == (1,)


def test_payload_bytes_metadata_and_phantoms_are_stored(database_url: str) -> None:
    s = f"Bin-{uuid.uuid4().hex}"
    topic = f"topic-{uuid.uuid4().hex}"
    raw = bytes(range(256))
    e = event(s, 1, 3, raw=raw, content_type=BINARY_CONTENT_TYPE, metadata={"a": [1, "x"]})
    ghost = PhantomRecord(0, 2, wire(s, 1, xid=77), PhantomReason.NO_MARKER)
    result = apply(database_url, [Batch(topic, 0, [e], [ghost])])
    assert (result.indexed, result.phantoms) == (1, 1)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT data, content_type, metadata FROM events WHERE stream_id = %s", (s,)
        ).fetchone()
        phantom = conn.execute(
            'SELECT "offset", xid::text, reason FROM phantoms WHERE topic = %s', (topic,)
        ).fetchone()
    assert row == (raw, BINARY_CONTENT_TYPE, {"a": [1, "x"]})
    assert phantom == (2, "77", "no_marker")


def test_concurrent_transactions_hand_out_positions_in_commit_order(own_database: str) -> None:
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        s = f"Par{n}-{uuid.uuid4().hex}"
        barrier.wait()
        for i in range(20):
            apply(
                own_database,
                [Batch("t", n, [event(s, 2 * i + 1, 2 * i), event(s, 2 * i + 2, 2 * i + 1)])],
            )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(own_database) as conn:
        positions = [r[0] for r in conn.execute("SELECT global_position FROM events ORDER BY 1")]
        per_stream = conn.execute(
            "SELECT bool_and(ok) FROM (SELECT version = row_number() OVER "
            "(PARTITION BY stream_id ORDER BY global_position) AS ok FROM events) x"
        ).fetchone()
    assert positions == list(range(1, 161))
    assert per_stream == (True,)


@pytest.mark.parametrize("shape", ["NoDash{}", "Many-parts-{}-here", "-leading{}", "Sl/ash-{}/x"])
def test_indexed_rows_carry_the_category_of_the_one_rule(own_database: str, shape: str) -> None:
    s = shape.format(uuid.uuid4().hex)
    e = event(s, 1, 0)

    apply(own_database, [Batch("t", 0, [e])])

    with psycopg.connect(own_database) as conn:
        row = conn.execute("SELECT category FROM events WHERE stream_id = %s", (s,)).fetchone()
    assert row is not None
    assert row[0] == category_of(s) == e.recorded().category
