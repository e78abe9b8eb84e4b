"""The scavenger under load, the indexer re-reading the topic from offset 0 afterwards, and the
audit of a store with deletions and truncations (own database: whole-table assertions)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from indexer import audit, scavenge
from indexer.reads import Reads
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.indexer.helpers import running_indexer
from tests.support import unique

pytestmark = pytest.mark.slow

STREAMS = 16
EVENTS = 1_000  # per stream, appended 500 at a time


def _count(url: str, query: str, *params: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _caught_up(url: str, topic: str) -> bool:
    """Whether the indexer's checkpoints have passed every committed event of the store."""
    passed = _count(
        url, "SELECT coalesce(sum(next_offset), 0) FROM index_checkpoints WHERE topic = %s", topic
    )
    return passed >= _count(url, "SELECT coalesce(sum(cardinality(event_ids)), 0) FROM appends")


def _wait(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_scavenging_under_load_removes_hidden_rows_for_good_and_the_store_audits_clean(
    make_settings: Callable[..., Settings], own_database: str
) -> None:
    settings = make_settings(database_url=own_database, scavenge_interval=0.0)
    prefix = unique("Scav").replace("-", "")
    doomed = [f"{prefix}-{i}" for i in range(STREAMS)]
    busy = f"{prefix}-busy"
    with EventStore(settings) as store, running_indexer(settings):
        for stream in doomed:
            for _ in range(EVENTS // 500):
                store.append(stream, [
                    NewEvent(type="Filler", data={"pad": "x" * 50}) for _ in range(500)
                ])  # fmt: skip
        _wait(lambda: _caught_up(own_database, settings.topic))
        # Four ways to hide events: soft delete, tombstone, truncate_before, max_count.
        for i, stream in enumerate(doomed):
            match i % 4:
                case 0:
                    store.delete_stream(stream)
                case 1:
                    store.delete_stream(stream, hard=True)
                case 2:
                    store.set_metadata(stream, truncate_before=EVENTS - 9)
                case _:
                    store.set_metadata(stream, max_count=10)
        hidden = STREAMS // 2 * EVENTS + STREAMS // 2 * (EVENTS - 10)

        # Appends and reads keep going while the scavenger runs.
        stop = threading.Event()
        appended: list[int] = []
        read_pages: list[int] = []
        failures: list[BaseException] = []

        def append_loop() -> None:
            try:
                while not stop.is_set():
                    appended.append(store.append(busy, [NewEvent(type="Busy")]).to_version)
            except BaseException as exc:
                failures.append(exc)

        def read_loop() -> None:
            try:
                with Reads.open(settings) as reads:
                    while not stop.is_set():
                        page = reads.read_all(from_position=1, limit=100)
                        read_pages.append(len(page.events))
            except BaseException as exc:
                failures.append(exc)

        workers = [threading.Thread(target=append_loop), threading.Thread(target=read_loop)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        before = len(appended)  # appends acknowledged in 1 s without the scavenger
        done = scavenge.scavenge(settings, batch=1000)
        during = len(appended) - before
        stop.set()
        for w in workers:
            w.join(30)
        assert not failures, failures
        print(
            f"\nscavenged {done.rows} rows in {done.seconds:.2f}s = {done.rate:.0f} rows/s "
            f"({done.batches} batches) while {during} appends were acknowledged "
            f"({during / done.seconds:.0f}/s; {before}/s before)"
        )
        assert done.rows == hidden
        assert during > 0 and read_pages
        assert _count(own_database, "SELECT count(*) FROM events WHERE stream_id = ANY(%s)",
                      doomed) == STREAMS // 4 * 2 * 10  # fmt: skip
        _wait(lambda: _caught_up(own_database, settings.topic))

    ok = io.StringIO()
    assert audit.run(settings, timeout=60, out=ok) == 0, ok.getvalue()

    # The indexer reset to offset 0 re-reads the whole topic: nothing scavenged comes back.
    with psycopg.connect(own_database) as conn:
        conn.execute("DELETE FROM index_checkpoints WHERE topic = %s", (settings.topic,))
    with running_indexer(settings):
        _wait(lambda: _caught_up(own_database, settings.topic))
    assert _count(own_database, "SELECT count(*) FROM events WHERE stream_id = ANY(%s)",
                  doomed) == STREAMS // 4 * 2 * 10  # fmt: skip
    assert _count(own_database, "SELECT count(*) FROM events WHERE stream_id = %s", busy) == len(
        appended
    )
    again = io.StringIO()
    assert audit.run(settings, timeout=60, out=again) == 0, again.getvalue()

    with psycopg.connect(own_database) as conn:
        conn.execute(
            "UPDATE events SET event_id = gen_random_uuid() WHERE stream_id = %s AND version = 3",
            (busy,),
        )
    tampered = io.StringIO()
    assert audit.run(settings, timeout=60, out=tampered) == 1
    assert f"{busy} v3" in tampered.getvalue()


def test_the_indexer_scavenges_in_the_background(
    make_settings: Callable[..., Settings], own_database: str
) -> None:
    # A short interval so that the test sees a background pass (the default is 30 s).
    settings = make_settings(database_url=own_database, scavenge_interval=0.5)
    stream = unique("Bg")
    with EventStore(settings) as store, running_indexer(settings) as ix:
        store.append(stream, [NewEvent(type="E", data={"i": i}) for i in range(20)])
        _wait(lambda: _count(own_database, "SELECT count(*) FROM events") == 20)
        store.set_metadata(stream, max_count=5)
        _wait(lambda: _count(own_database, "SELECT count(*) FROM events") == 5, timeout=30)
        _wait(lambda: ix.indexer.scavenged == 15, timeout=10)
    assert _count(own_database, "SELECT below_version FROM scavenged WHERE stream_id = %s",
                  stream) == 16  # fmt: skip
