"""The verdict rule (kafkastore.verdict) against real PostgreSQL and Kafka."""

from __future__ import annotations

import threading
import time

import psycopg

from kafkastore import pg
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from kafkastore.verdict import (
    WRITER_LOCK_SPACE,
    PhantomReason,
    Verdict,
    VerdictResolver,
    writer_lock_key,
)
from tests.support import unique
from tests.support.wire import ManualWriter
from tests.writer.topic_reader import read_topic
from writer import faults


def _judge(settings: Settings, writer: ManualWriter) -> dict[tuple[str, int, str], Verdict]:
    events = read_topic(settings)
    with pg.connect(settings.database_url, autocommit=True) as conn:
        judgements = VerdictResolver(writer.sysid).judge(conn, events)
    return {
        (e.stream_id, e.version, str(e.event_id)): j.verdict
        for e, j in zip(events, judgements, strict=True)
    }


def _key(p: object) -> tuple[str, int, str]:
    return (p.stream_id, p.version, str(p.event_id))  # type: ignore[attr-defined]


def test_an_event_whose_marker_lists_it_is_real(settings: Settings) -> None:
    with ManualWriter(settings) as writer:
        produced = writer.append(unique("Real"), [("A", {"n": 1}), ("B", {"n": 2})])
        verdicts = _judge(settings, writer)
    assert [verdicts[_key(p)] for p in produced] == [Verdict.REAL, Verdict.REAL]


def test_an_event_of_an_aborted_write_is_a_phantom(settings: Settings) -> None:
    with ManualWriter(settings) as writer:
        produced = writer.phantom_aborted(unique("Aborted"), [("A", {})])
        verdicts = _judge(settings, writer)
    assert verdicts[_key(produced[0])] is Verdict.PHANTOM


def test_a_committed_xid_without_a_marker_is_a_phantom(settings: Settings) -> None:
    # What an xid reused after a crash looks like: pg_xact_status says committed.
    with ManualWriter(settings) as writer:
        produced = writer.phantom_committed_xid(unique("Reused"), [("A", {})])
        events = read_topic(settings)
        with pg.connect(settings.database_url, autocommit=True) as conn:
            status = conn.execute(
                "SELECT pg_xact_status(%s::xid8)", (str(events[0].xid),)
            ).fetchone()
            judgement = VerdictResolver(writer.sysid).judge(conn, events)[0]
    assert status is not None and status[0] == "committed"
    assert events[0].event_id == produced[0].event_id
    assert judgement.verdict is Verdict.PHANTOM
    assert judgement.reason is PhantomReason.NO_MARKER


def test_a_marker_that_does_not_list_the_event_makes_it_a_phantom(settings: Settings) -> None:
    with ManualWriter(settings) as writer:
        real, forged = writer.phantom_forged(unique("Forged"), ("A", {}))
        events = read_topic(settings)
        with pg.connect(settings.database_url, autocommit=True) as conn:
            judged = dict(
                zip(
                    [e.event_id for e in events],
                    VerdictResolver(writer.sysid).judge(conn, events),
                    strict=True,
                )
            )
    assert judged[real.event_id].verdict is Verdict.REAL
    assert judged[forged.event_id].verdict is Verdict.PHANTOM
    assert judged[forged.event_id].reason is PhantomReason.NOT_IN_MARKER


def test_a_second_copy_of_a_real_event_at_another_offset_is_a_phantom(
    settings: Settings,
) -> None:
    # What a batch resent under a bumped producer epoch leaves in the log (the broker cannot
    # tell it from a new batch): the same headers, ids and versions at a later offset. Only
    # the copy at the offset its marker records is real.
    with ManualWriter(settings) as writer:
        produced = writer.append(unique("Copied"), [("A", {"n": 1})])
        (original,) = read_topic(settings)
        copy = original._replace(offset=original.offset + 7)
        with pg.connect(settings.database_url, autocommit=True) as conn:
            first, second = VerdictResolver(writer.sysid).judge(conn, [original, copy])
            again = VerdictResolver(writer.sysid).judge(conn, [copy, original])
    assert original.offset == produced[0].offset
    assert first.verdict is Verdict.REAL
    assert second.verdict is Verdict.PHANTOM
    assert second.reason is PhantomReason.COPY
    assert [j.verdict for j in again] == [Verdict.PHANTOM, Verdict.REAL]


def test_an_event_from_another_cluster_is_a_phantom(settings: Settings) -> None:
    with ManualWriter(settings) as writer:
        writer.phantom_foreign(unique("Foreign"), ("A", {}))
        events = read_topic(settings)
        with pg.connect(settings.database_url, autocommit=True) as conn:
            judgement = VerdictResolver(writer.sysid).judge(conn, events)[0]
    assert judgement.verdict is Verdict.PHANTOM
    assert judgement.reason is PhantomReason.FOREIGN_CLUSTER


def _wait_while_pending(settings: Settings, commit: bool) -> tuple[Verdict, Verdict, float]:
    """Judge while the writer's transaction is open, then wait for it to end."""
    with (
        ManualWriter(settings) as writer,
        pg.connect(settings.database_url, autocommit=True) as conn,
    ):
        resolver = VerdictResolver(writer.sysid)
        ended = threading.Event()
        with writer.pending(unique("Pending"), [("A", {})], commit=commit):
            events = read_topic(settings)
            before = resolver.judge(conn, events)[0].verdict

            def finish_later() -> None:
                time.sleep(0.5)
                ended.set()

            threading.Thread(target=finish_later).start()
            ended.wait()
        start = time.monotonic()
        after = resolver.judge_until_settled(conn, events, timeout=10)[0].verdict
        return before, after, time.monotonic() - start


def test_an_in_progress_write_is_pending_then_real_once_it_commits(settings: Settings) -> None:
    before, after, _ = _wait_while_pending(settings, commit=True)
    assert before is Verdict.PENDING
    assert after is Verdict.REAL


def test_an_in_progress_write_is_pending_then_a_phantom_once_it_aborts(
    settings: Settings,
) -> None:
    before, after, _ = _wait_while_pending(settings, commit=False)
    assert before is Verdict.PENDING
    assert after is Verdict.PHANTOM


def test_judge_until_settled_waits_for_a_running_writer(settings: Settings) -> None:
    with (
        ManualWriter(settings) as writer,
        pg.connect(settings.database_url, autocommit=True) as conn,
    ):
        resolver = VerdictResolver(writer.sysid)
        results: list[Verdict] = []
        with writer.pending(unique("Waiting"), [("A", {})]):
            events = read_topic(settings)

            def judge() -> None:
                with pg.connect(settings.database_url, autocommit=True) as other:
                    results.append(
                        resolver.judge_until_settled(other, events, timeout=10)[0].verdict
                    )

            thread = threading.Thread(target=judge)
            thread.start()
            time.sleep(0.5)
            assert not results, "the verdict must wait while the writer runs"
        thread.join(10)
    assert results == [Verdict.REAL]
    assert isinstance(conn, psycopg.Connection)


def test_a_committed_write_evicted_from_the_cache_mid_batch_stays_real(settings: Settings) -> None:
    # A tiny cache: judging a batch that holds one cached write and new ones evicts the cached
    # write while the batch is judged; its events must still be judged by their marker.
    with ManualWriter(settings) as writer:
        first = writer.append(unique("Old"), [("A", {})])
        second = writer.append(unique("Old"), [("A", {})])
        third = writer.append(unique("New"), [("A", {})])
        events = {e.event_id: e for e in read_topic(settings)}
        with pg.connect(settings.database_url, autocommit=True) as conn:
            resolver = VerdictResolver(writer.sysid, cache_size=2)
            resolver.judge(conn, [events[first[0].event_id], events[second[0].event_id]])
            batch = [events[first[0].event_id], events[third[0].event_id]]
            judged = resolver.judge(conn, batch)
    assert [j.verdict for j in judged] == [Verdict.REAL, Verdict.REAL]


def test_the_cache_holds_at_most_its_budget_of_events_and_evicted_writes_judge_again(
    settings: Settings,
) -> None:
    # A group-committed write holds thousands of events: the cache is bounded by events as well
    # as by writes. Three writes of three events under a budget of five keep one write cached;
    # judging an evicted one again reads its marker again and it is still real.
    with ManualWriter(settings) as writer:
        appended = [writer.append(unique("Big"), [("A", {})] * 3) for _ in range(3)]
        events = {e.event_id: e for e in read_topic(settings)}
        with pg.connect(settings.database_url, autocommit=True) as conn:
            resolver = VerdictResolver(writer.sysid, cache_events=5)
            for written in appended:
                resolver.judge(conn, [events[e.event_id] for e in written])
            assert resolver.cached_events == 3
            queries = resolver.queries
            again = resolver.judge(conn, [events[e.event_id] for e in appended[0]])
            assert resolver.queries == queries + 1
            cached = resolver.judge(conn, [events[e.event_id] for e in appended[0]])
            assert resolver.queries == queries + 1  # now cached again
    assert [j.verdict for j in again + cached] == [Verdict.REAL] * 6
    assert resolver.cached_events == 3


def test_a_consumer_waits_on_the_writers_lock_instead_of_polling(settings: Settings) -> None:
    # The real writer holds an advisory lock on its xid until COMMIT: judging one of its events
    # before the commit waits on that lock, then judges once more - no xid-status polling while
    # the writer waits (polling would re-run the marker and xid queries every few ms).
    stream = unique("Locked")
    acked, release = threading.Event(), threading.Event()

    def hold(step: str) -> None:
        if step == "acked":
            acked.set()
            release.wait(10)

    with (
        faults.injected(hold),
        EventStore(settings) as store,
        pg.connect(settings.database_url, autocommit=True) as conn,
    ):
        appended = threading.Thread(target=store.append, args=(stream, [NewEvent("A", {})]))
        appended.start()
        assert acked.wait(10), "the append never reached the acked step"
        events = [e for e in read_topic(settings) if e.stream_id == stream]
        assert len(events) == 1
        resolver = VerdictResolver(pg.system_identifier(conn))
        results: list[Verdict] = []
        judging = threading.Thread(
            target=lambda: results.extend(
                j.verdict for j in resolver.judge_until_settled(conn, events, timeout=10)
            )
        )
        judging.start()
        time.sleep(0.8)
        assert not results, "the verdict must wait while the writer runs"
        release.set()
        judging.join(10)
        appended.join(10)
    assert results == [Verdict.REAL]
    # The markers, then the wait on the writer's lock and the markers again in one round trip.
    assert resolver.queries == 2, resolver.queries


def test_the_wait_on_a_writer_lock_gives_up_at_its_timeout_and_leaves_the_session_clean(
    settings: Settings,
) -> None:
    # A writer that outlives the verdict's wait: the wait says so (None) instead of raising,
    # and the consumer's connection keeps no transaction and no lock_timeout of the wait's.
    key = writer_lock_key(2**40 + 12345)
    with (
        pg.connect(settings.database_url) as writer,
        pg.connect(settings.database_url, autocommit=True) as conn,
    ):
        writer.execute("SELECT pg_advisory_xact_lock(%s, %s)", (WRITER_LOCK_SPACE, key))
        assert (
            pg.after_advisory_locks(conn, WRITER_LOCK_SPACE, [key], 0.3, then=("SELECT 1", ()))
            is None
        )
        assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        writer.commit()
        rows = pg.after_advisory_locks(
            conn, WRITER_LOCK_SPACE, [key], 5.0, then=("SELECT %s", (7,))
        )
        assert rows == [(7,)]
