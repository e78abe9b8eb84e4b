"""The indexer under faults: SIGKILL mid-batch, rebalances, stale instances, running writers."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson
import psycopg
import pytest

from consumers.checkpoints import PgCheckpoints
from consumers.runtime import PartitionBatch
from indexer import audit, projection
from kafkastore.client import EventStore
from kafkastore.codec import WireEvent
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.indexer.helpers import indexed, running_indexer, wait_for_count
from tests.support import unique
from tests.support.process import ServiceProcess
from tests.support.wire import ManualWriter, Produced

MARKED = """
SELECT a.stream_id, a.from_version + o.i - 1, o.id::text
FROM appends a CROSS JOIN LATERAL unnest(a.event_ids) WITH ORDINALITY AS o(id, i)
"""
INDEXED = "SELECT stream_id, version, event_id::text FROM events"
POSITIONS = """
SELECT count(*), count(DISTINCT global_position), coalesce(max(global_position), 0),
       (SELECT last_position FROM index_head)
FROM events
"""


@contextmanager
def load(settings: Settings, streams: int = 12, writers: int = 1) -> Iterator[threading.Event]:
    """Appends 5-event batches round-robin to ``streams`` streams until the block ends; with
    ``writers`` > 1, that many stores (each its own writer: producer and connections) race on
    the same streams."""
    stop = threading.Event()
    names = [unique("Load") for _ in range(streams)]
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            with EventStore(settings).open() as store:
                i = offset
                while not stop.is_set():
                    store.append(names[i % streams], [NewEvent(type="Tick", data={"i": i})] * 5)
                    i += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(w,), name=f"test-load-{w}", daemon=True)
        for w in range(writers)
    ]
    for thread in threads:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    if errors:
        raise errors[0]


def index_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def wait_until(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def assert_index_is_exactly_the_committed_events(settings: Settings) -> None:
    url = settings.database_url
    with psycopg.connect(url) as conn:
        marked = conn.execute(MARKED).fetchall()
    wait_until(lambda: index_count(url) >= len(marked))
    with psycopg.connect(url) as conn:
        rows = conn.execute(INDEXED).fetchall()
        count, distinct, top, head = conn.execute(POSITIONS).fetchone()  # type: ignore[misc]
    assert sorted(rows) == sorted(marked)  # no loss, no duplicate, no phantom
    assert count == distinct == top == head == len(marked)  # positions 1..n, no gap
    report = io.StringIO()
    assert audit.run(settings, timeout=60, out=report) == 0, report.getvalue()


@pytest.mark.slow
def test_an_indexer_killed_mid_batch_under_load_resumes_without_loss_duplicate_or_gap(
    make_settings: Callable[..., Settings],
    own_database: str,
    indexer_server: Callable[..., ServiceProcess],
) -> None:
    settings = make_settings(database_url=own_database, indexer_batch_max=500)
    with load(settings):
        first = indexer_server(settings, ready_line="indexer started")
        wait_until(lambda: index_count(own_database) >= 1000)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        wait_until(lambda: not first.running)
        killed_at = index_count(own_database)
        # The same group and the default session timeout: the restart claims the dead
        # member's group.instance.id and resumes from the offsets stored in PostgreSQL.
        indexer_server(settings, ready_line="indexer started")
        wait_until(lambda: index_count(own_database) >= killed_at + 1000)
    assert first.returncode == -signal.SIGKILL
    assert_index_is_exactly_the_committed_events(settings)


@pytest.mark.slow
def test_two_indexer_processes_on_one_group_index_exactly_once_through_rebalances(
    make_settings: Callable[..., Settings],
    own_database: str,
    indexer_server: Callable[..., ServiceProcess],
) -> None:
    settings = make_settings(database_url=own_database, indexer_batch_max=500)
    with load(settings):
        a = indexer_server(settings, ready_line="indexer started")
        wait_until(lambda: index_count(own_database) >= 500)
        indexer_server(settings, ready_line="indexer started")  # joins: rebalance
        wait_until(lambda: "assigned" in _tail(a, "assigned", 2))
        at = index_count(own_database)
        wait_until(lambda: index_count(own_database) >= at + 1000)
        assert a.stop() == 0  # leaves the group: rebalance again, b takes everything
        at = index_count(own_database)
        wait_until(lambda: index_count(own_database) >= at + 500)
    assert_index_is_exactly_the_committed_events(settings)


@pytest.mark.slow
def test_two_writers_and_two_indexer_processes_on_one_topic_index_exactly_once(
    make_settings: Callable[..., Settings],
    own_database: str,
    indexer_server: Callable[..., ServiceProcess],
) -> None:
    """Scale-out (issue 14): two stores racing on the same streams while two indexer processes
    share the topic's partitions; every stream's versions are gap-free and indexed once."""
    settings = make_settings(database_url=own_database, indexer_batch_max=500)
    indexer_server(settings, ready_line="indexer started")
    b = indexer_server(settings, ready_line="indexer started")
    with load(settings, streams=6, writers=2):
        wait_until(lambda: "assigned" in _tail(b, "assigned", 1))
        wait_until(lambda: index_count(own_database) >= 3000)
    assert_index_is_exactly_the_committed_events(settings)
    with psycopg.connect(own_database) as conn:
        gaps = conn.execute(
            "SELECT stream_id FROM events GROUP BY stream_id "
            "HAVING count(*) <> max(version) OR min(version) <> 1"
        ).fetchall()
    assert gaps == []


def _tail(proc: ServiceProcess, word: str, times: int) -> str:
    """``word`` when the process logged it at least ``times`` times (else empty)."""
    text = proc.log_path.read_text(errors="replace")
    return word if text.count(f"{word} ") >= times else ""


def test_a_stale_indexer_instance_is_fenced_by_checkpoints_that_moved_on(
    make_settings: Callable[..., Settings], own_database: str
) -> None:
    settings = make_settings(database_url=own_database, partitions=1)
    stream = unique("Stale")
    checkpoints = PgCheckpoints(table="index_checkpoints", group=None)
    with ManualWriter(settings) as w:
        old = w.append(stream, [("Deposited", {"amount": i}) for i in range(5)])
        # Another instance owns the partition: it holds the checkpoint row while the stale
        # instance's first batch (starting at the old offset) waits for the lock; it indexes the
        # same events and moves the checkpoint on, then commits.
        other = psycopg.connect(own_database)
        checkpoints.lock(other, settings.topic, {0: old[0].offset})
        other.commit()
        checkpoints.lock(other, settings.topic, {0: old[0].offset})
        with running_indexer(settings) as ix:
            _wait_until_blocked_on_a_lock(own_database)
            projection.apply(other, [_batch(settings.topic, old)])
            checkpoints.advance(other, settings.topic, {0: old[-1].offset + 1})
            other.commit()
            other.close()
            new = w.append(stream, [("Deposited", {"amount": 100})])
            assert wait_for_count(own_database, [stream], 6, indexer=ix) == 6
            loop = ix.indexer._loop
            assert loop is not None
            fenced = loop.stats()["partitions"][0]["fenced"]
    assert fenced == 1
    assert indexed(own_database, [stream]) == [
        (stream, p.version, str(p.event_id)) for p in [*old, *new]
    ]
    with psycopg.connect(own_database) as conn:
        assert checkpoints.load(conn, settings.topic, [0]) == {0: new[0].offset + 1}


def _batch(topic: str, produced: list[Produced]) -> PartitionBatch:
    events = tuple(
        WireEvent(
            event_id=p.event_id,
            stream_id=p.stream_id,
            version=p.version,
            type=p.type,
            content_type="application/json",
            time=datetime.now(UTC),
            write_id=p.write_id,
            xid=1,
            sysid="1",
            metadata={},
            metadata_json=None,
            value=orjson.dumps(p.data),
            partition=p.partition,
            offset=p.offset,
        )
        for p in produced
    )
    return PartitionBatch(topic, 0, produced[0].offset, produced[-1].offset + 1, events, ())


def _wait_until_blocked_on_a_lock(database_url: str) -> None:
    def blocked() -> bool:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s",
                ("%index_checkpoints%",),
            ).fetchone()
        return row is not None and row[0] > 0

    wait_until(blocked, timeout=60)


@pytest.mark.parametrize("commits", [True, False], ids=["commits", "aborts"])
def test_a_running_writer_holds_its_partition_back_until_it_settles(
    make_settings: Callable[..., Settings], commits: bool
) -> None:
    settings = make_settings(partitions=1)
    slow, fast = unique("Slow"), unique("Fast")
    with ManualWriter(settings) as w, ManualWriter(settings) as w2, running_indexer(settings) as ix:
        before = w2.append(fast, [("Before", {})])
        assert wait_for_count(settings.database_url, [fast], 1, indexer=ix) == 1
        with w.pending(slow, [("Slow", {})], commit=commits) as pending:
            after = w2.append(fast, [("After", {})])
            loop = ix.indexer._loop
            assert loop is not None
            # The indexer has fetched past the running writer's event and judged it again.
            wait_until(
                lambda: (
                    (loop.stats()["partitions"].get(0, {}).get("high_watermark") or 0)
                    > after[0].offset
                )
            )
            queries = loop.resolver_queries
            wait_until(lambda: loop.resolver_queries >= queries + 3)
            held = indexed(settings.database_url, [slow, fast])
        # "After" follows the settled event in the partition: once it is indexed, so is that.
        assert wait_for_count(settings.database_url, [fast], 2, indexer=ix) == 2
        final = indexed(settings.database_url, [slow, fast])
    assert held == [(fast, 1, str(before[0].event_id))]
    if commits:
        assert final == [
            (fast, 1, str(before[0].event_id)),
            (slow, 1, str(pending[0].event_id)),
            (fast, 2, str(after[0].event_id)),
        ]
    else:
        assert final == [(fast, 1, str(before[0].event_id)), (fast, 2, str(after[0].event_id))]
