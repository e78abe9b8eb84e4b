"""The sustained ramp (``bench/ramp.py``) for kafkastore and the systems it is compared with.

- kafkastore: ``AsyncEventStore.append`` in the benchmark process, the indexer running; index lag
  followed by a :class:`bench.ramp.LagTracker`, the backlog from the topic's high watermarks.
- raw Kafka: the same messages produced with confluent-kafka; an append is acknowledged when the
  delivery reports of its messages arrived (no index: no lag).
- the naive PostgreSQL store and eventsourcing: their appends run on 8 threads with a connection
  each (their closed-loop producers' shape); the open loop queues appends for those threads.

Every system gets the same 10-event appends over 2 000 streams, one append in flight per stream.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, TopicPartition
from psycopg.types.json import Jsonb

from bench import drive, ramp
from bench.context import PRODUCERS, Context, run_loop
from bench.payload import EVENT_TYPE, OwnedStreams, event_data, expected, stream_ids
from bench.workloads.baselines import NAIVE_HEAD, NAIVE_INSERT, NAIVE_TABLE
from kafkastore import kafka, pg, topic
from kafkastore.codec import encode_headers, format_time
from kafkastore.records import NewEvent
from kafkastore.streams import new_event_id

PER_APPEND = 10
STREAMS = 2000
STEP_S = {True: 3.0, False: 10.0}


def _ramp(
    ctx: Context,
    name: str,
    op: ramp.AppendOp,
    tracker: ramp.LagTracker | None,
    backlog: Callable[[], int] | None = None,
) -> Any:
    step_s = STEP_S[ctx.quick]
    total = step_s * len(ramp.STEPS) + ctx.timing.warmup
    rss = ("bench", "indexer", "api") if tracker is not None else ("bench",)
    with drive.bar(ctx.progress, name, total) as update:
        return run_loop(
            ramp.run(
                op=op,
                steps=ramp.STEPS,
                per_append=PER_APPEND,
                step_s=step_s,
                probe=lambda: ctx.probe(*rss),
                tracker=tracker,
                update=update,
                warmup_s=ctx.timing.warmup,
                backlog=backlog,
            )
        )


def _result(steps: list[dict[str, Any]], client: str, **extra: Any) -> dict[str, Any]:
    out = ramp.summary(steps)
    out.update({"client": client, "events_per_append": PER_APPEND, "streams": STREAMS, **extra})
    return out


def kafkastore(ctx: Context, name: str) -> dict[str, Any]:
    store = ctx.astore()
    owned = OwnedStreams(stream_ids("sus", STREAMS))
    seq = itertools.count()
    topic_name = ctx.settings.topic

    conn = pg.connect(ctx.settings.database_url, autocommit=True)

    def poll_checkpoints() -> dict[int, int]:  # one connection for the tracker's thread
        return _checkpoints(conn, topic_name)

    tracker = ramp.LagTracker(poll_checkpoints)
    watermarks = kafka.consumer(ctx.settings, f"bench-{ctx.env.run_id}-ramp-watermarks")
    partitions = list(
        watermarks.list_topics(topic_name, timeout=10.0).topics[topic_name].partitions
    )
    backlog_conn = pg.connect(ctx.settings.database_url, autocommit=True)

    def backlog() -> int:
        """Messages of the topic the indexer has not passed: high watermarks - checkpoints."""
        high = {
            p: watermarks.get_watermark_offsets(TopicPartition(topic_name, p), timeout=10.0)[1]
            for p in partitions
        }
        return ramp.backlog_of(high, _checkpoints(backlog_conn, topic_name))

    async def op(i: int) -> tuple[int, ramp.Ack]:
        stream, version = owned.take()
        new = None
        try:
            events = [NewEvent(type=EVENT_TYPE, data=event_data(next(seq))) for _ in range(10)]
            result = await store.append(stream, events, expected(version))
            new = result.to_version
        finally:
            owned.done(stream, new)
        last = result.events[-1]
        return PER_APPEND, (last.partition, last.offset)

    tracker.poll()
    tracker.start()
    try:
        steps = _ramp(ctx, name, op, tracker, backlog)
    finally:
        tracker.stop()
        conn.close()
        backlog_conn.close()
        watermarks.close()
    return _result(
        steps,
        "AsyncEventStore.append in the benchmark process, open loop; the indexer running",
        lag_definition="append acknowledged -> index_checkpoints passed its last offset "
        f"(polled every {ramp.POLL_S * 1000:.0f} ms)",
        lag_poll_errors=tracker.errors,
        **ctx.settle(timeout=300.0),
    )


def _checkpoints(conn: Any, topic_name: str) -> dict[int, int]:
    with pg.translated():
        rows = conn.execute(
            "SELECT partition, next_offset FROM index_checkpoints WHERE topic = %s", (topic_name,)
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def raw_kafka(ctx: Context, name: str) -> dict[str, Any]:
    settings = ctx.settings.replace(topic=f"{ctx.settings.topic}-rawramp")
    topic.ensure_topic(settings)
    ctx.env.add_topic(settings.topic)
    producer = kafka.producer(settings)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    poller = threading.Thread(target=poll, daemon=True, name="bench-raw-poller")
    poller.start()
    owned = OwnedStreams(stream_ids("rawsus", STREAMS))
    seq = itertools.count()
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def op(i: int) -> tuple[int, ramp.Ack]:
        if not loop_box:
            loop_box.append(asyncio.get_running_loop())
        loop = loop_box[0]
        stream, version = owned.take()
        done: asyncio.Future[None] = loop.create_future()
        left = [PER_APPEND]
        failure: list[str] = []

        def report(err: KafkaError | None, msg: Message) -> None:  # on the poller thread
            if err is not None:
                failure.append(err.str())
            left[0] -= 1
            if left[0] == 0:
                loop.call_soon_threadsafe(_resolve, done, failure)

        now = format_time(datetime.now(UTC))
        write_id = str(uuid.uuid4())
        try:
            for k in range(PER_APPEND):
                headers = encode_headers(
                    event_id=new_event_id(),
                    event_type=EVENT_TYPE,
                    stream_id=stream,
                    version=version + k + 1,
                    content_type="application/json",
                    source=settings.source,
                    time=now,
                    write_id=write_id,
                    xid=1000,
                    sysid="7300000000000000000",
                    metadata=None,
                    metadata_json=None,
                )
                while True:
                    try:
                        producer.produce(
                            settings.topic,
                            value=orjson.dumps(event_data(next(seq))),
                            key=stream.encode(),
                            headers=headers,
                            on_delivery=report,
                        )
                        break
                    except BufferError:
                        await asyncio.sleep(0.005)
            await done
        finally:
            owned.done(stream, version + PER_APPEND)
        return PER_APPEND, None

    try:
        steps = _ramp(ctx, name, op, None)
    finally:
        stop.set()
        poller.join(5.0)
        producer.flush(10.0)
    return _result(
        steps,
        "one confluent-kafka Producer driven from asyncio (delivery reports on a poller "
        f"thread); acks=all, idempotence, linger.ms={settings.linger_ms}",
    )


def _resolve(done: asyncio.Future[None], failure: list[str]) -> None:
    if done.done():
        return
    if failure:
        done.set_exception(RuntimeError(failure[0]))
    else:
        done.set_result(None)


@contextmanager
def _threads(workers: int) -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-ramp")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _on_threads(pool: ThreadPoolExecutor, append: Callable[[], None]) -> Callable[[int], Any]:
    async def op(i: int) -> tuple[int, ramp.Ack]:
        await asyncio.get_running_loop().run_in_executor(pool, append)
        return PER_APPEND, None

    return op


def naive_postgres(ctx: Context, name: str) -> dict[str, Any]:
    url = ctx.settings.database_url
    with pg.connect(url, autocommit=True) as conn:
        conn.execute(NAIVE_TABLE)
    local = threading.local()
    conns: list[Any] = []
    lock = threading.Lock()
    owned = OwnedStreams(stream_ids("naivesus", STREAMS))
    seq = itertools.count()

    def append() -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = pg.connect(url)
            conns.append(conn)
        with lock:
            stream, version = owned.take()
        new = None
        try:
            with pg.translated(), conn.transaction(), conn.cursor() as cur:
                row = cur.execute(NAIVE_HEAD, (stream,)).fetchone()
                current = int(row[0]) if row and row[0] else 0
                if current != version:
                    raise RuntimeError(f"wrong expected version {version} != {current}")
                for k in range(PER_APPEND):
                    values = (uuid.uuid4(), stream, current + k + 1, EVENT_TYPE)
                    cur.execute(NAIVE_INSERT, (*values, Jsonb(event_data(next(seq)))))
            new = version + PER_APPEND
        finally:
            with lock:
                owned.done(stream, new)

    try:
        with _threads(PRODUCERS) as pool:
            steps = _ramp(ctx, name, _on_threads(pool, append), None)
    finally:
        for c in conns:
            c.close()
    return _result(
        steps, "8 threads with a psycopg connection each: SELECT max(version), INSERT per event"
    )


def eventsourcing(ctx: Context, name: str) -> dict[str, Any]:
    from bench.workloads import es  # the library comes with the dev extra

    app = es.new_app(ctx)
    try:
        aggregates = es.create_aggregates(ctx, app, name, STREAMS)
        lock = threading.Lock()
        owned = OwnedStreams([str(i) for i in range(len(aggregates))])

        def append() -> None:
            with lock:
                key, _ = owned.take()
            try:
                agg = aggregates[int(key)]
                for _ in range(PER_APPEND):
                    agg.add_line(0, event_data(0))
                app.save(agg)
            finally:
                with lock:
                    owned.done(key, None)

        with _threads(PRODUCERS) as pool:
            steps = _ramp(ctx, name, _on_threads(pool, append), None)
    finally:
        app.close()
    return _result(steps, "eventsourcing Application, 8 threads, pool of 8 connections")
