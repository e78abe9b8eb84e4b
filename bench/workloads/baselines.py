"""What a user would pick instead, with the same workload shape (8 closed-loop producers over
1 000 streams, ~200-byte JSON events, exact expected versions) on the same services.

- raw Kafka: the same messages (key, value, CloudEvents headers incl. ce_pgwrite/ce_pgxid, acks=all,
  idempotence, the writer's linger.ms) with confluent-kafka and nothing else; an "append" is its
  messages produced and all their delivery reports received.
- a naive PostgreSQL store: ``SELECT max(version)`` then one ``INSERT`` per event in one
  transaction per append; a unique ``(stream_id, version)`` index is the concurrency backstop (the
  common hand-written store). ``*_batched``: the same with psycopg's ``executemany``, which
  pipelines the INSERTs (a stronger baseline than the issue's "naive" one).
- the eventsourcing library (PyPI) with its PostgreSQL application recorder: aggregates whose
  saves carry the workload's events.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message
from psycopg.types.json import Jsonb

from bench import drive
from bench.context import PRODUCERS, STREAMS, Context
from bench.payload import EVENT_TYPE, OwnedStreams, event_data, split, stream_ids
from kafkastore import kafka, pg
from kafkastore.codec import encode_headers, format_time
from kafkastore.streams import new_event_id

# --------------------------------------------------------------------------------- raw Kafka


class _Acks:
    """Counts the delivery reports of one append's messages."""

    __slots__ = ("done", "error", "lock", "pending")

    def __init__(self, n: int) -> None:
        self.pending = n
        self.error: KafkaError | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()

    def report(self, err: KafkaError | None, msg: Message) -> None:
        with self.lock:
            if err is not None:
                self.error = err
            self.pending -= 1
            if self.pending == 0:
                self.done.set()

    def wait(self) -> None:
        if not self.done.wait(30.0):
            raise RuntimeError("delivery reports missing after 30 s")
        if self.error is not None:
            raise RuntimeError(self.error.str())


def raw_kafka(ctx: Context, name: str, *, per_append: int, depth: int = 1) -> dict[str, Any]:
    settings = ctx.settings.replace(topic=f"{ctx.settings.topic}-raw")
    from kafkastore import topic

    topic.ensure_topic(settings)
    ctx.env.add_topic(settings.topic)
    producer = kafka.producer(settings)
    stop = threading.Event()

    def poll() -> None:  # the writer's arrangement: one thread serves delivery reports
        while not stop.is_set():
            producer.poll(0.05)

    poller = threading.Thread(target=poll, daemon=True, name="bench-raw-poller")
    poller.start()
    seq = itertools.count()
    sysid = "7300000000000000000"
    source = settings.source
    topic_name = settings.topic

    def make(owned: OwnedStreams) -> Callable[[], int]:
        def op() -> int:
            stream, version = owned.take()
            acks = _Acks(per_append)
            key = stream.encode()
            now = format_time(datetime.now(UTC))
            write_id = str(uuid.uuid4())
            for i in range(per_append):
                headers = encode_headers(
                    event_id=new_event_id(),
                    event_type=EVENT_TYPE,
                    stream_id=stream,
                    version=version + i + 1,
                    content_type="application/json",
                    source=source,
                    time=now,
                    write_id=write_id,
                    xid=1000,
                    sysid=sysid,
                    metadata=None,
                    metadata_json=None,
                )
                while True:
                    try:
                        producer.produce(
                            topic_name,
                            value=orjson.dumps(event_data(next(seq))),
                            key=key,
                            headers=headers,
                            on_delivery=acks.report,
                        )
                        break
                    except BufferError:
                        producer.poll(0.01)
            try:
                acks.wait()
            finally:
                owned.done(stream, version + per_append)
            return per_append

        return op

    owners = split(stream_ids("raw", STREAMS), PRODUCERS * depth)
    ops = [make(o) for o in owners]
    try:
        tally, extra = drive.run_threads(ctx.progress, name, ops, ctx.timing, ctx.probe("bench"))
    finally:
        stop.set()
        poller.join(5.0)
        producer.flush(10.0)
        # Let the producer go here, in the main thread, rather than in a later collection on
        # whatever thread triggers it.
        del ops, make, poll, poller
        gc.collect()
    return drive.finish(
        tally,
        ctx.timing,
        {
            **extra,
            "producers": PRODUCERS,
            "in_flight_per_producer": depth,
            "concurrency": PRODUCERS * depth,
            "events_per_append": per_append,
            "streams": STREAMS,
            "client": f"one confluent-kafka Producer, {PRODUCERS * depth} threads each waiting "
            "for its append's delivery reports; acks=all, idempotence, "
            f"linger.ms={settings.linger_ms}",
        },
    )


# ----------------------------------------------------------------------- naive PostgreSQL

NAIVE_TABLE = """
CREATE TABLE IF NOT EXISTS naive_events (
    id          uuid        PRIMARY KEY,
    stream_id   text        NOT NULL,
    version     integer     NOT NULL,
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
)
"""
NAIVE_HEAD = "SELECT max(version) FROM naive_events WHERE stream_id = %s"
NAIVE_INSERT = (
    "INSERT INTO naive_events (id, stream_id, version, type, data) VALUES (%s, %s, %s, %s, %s)"
)


def naive_postgres(
    ctx: Context, name: str, *, per_append: int, batched: bool = False
) -> dict[str, Any]:
    """``batched``: the INSERTs of an append go in one ``executemany`` (psycopg pipelines them);
    else one ``execute`` per event, the loop most hand-written stores have."""
    url = ctx.settings.database_url
    with pg.connect(url, autocommit=True) as conn:
        conn.execute(NAIVE_TABLE)
    conns = [pg.connect(url) for _ in range(PRODUCERS)]
    seq = itertools.count()

    def make(owned: OwnedStreams, conn: Any) -> Callable[[], int]:
        def op() -> int:
            stream, version = owned.take()
            new = None
            try:
                with pg.translated(), conn.transaction(), conn.cursor() as cur:
                    row = cur.execute(NAIVE_HEAD, (stream,)).fetchone()
                    current = row[0] or 0
                    if current != version:
                        raise RuntimeError(f"wrong expected version {version} != {current}")
                    rows = [
                        (uuid.uuid4(), stream, current + i + 1, EVENT_TYPE, Jsonb(data))
                        for i, data in enumerate(event_data(next(seq)) for _ in range(per_append))
                    ]
                    if batched:
                        cur.executemany(NAIVE_INSERT, rows)
                    else:
                        for row_values in rows:
                            cur.execute(NAIVE_INSERT, row_values)
                new = version + per_append
            finally:
                owned.done(stream, new)
            return per_append

        return op

    owners = split(stream_ids(f"naive{per_append}{'b' * batched}", STREAMS), PRODUCERS)
    try:
        tally, extra = drive.run_threads(
            ctx.progress,
            name,
            [make(o, c) for o, c in zip(owners, conns, strict=True)],
            ctx.timing,
            ctx.probe("bench"),
        )
    finally:
        for c in conns:
            c.close()
    return drive.finish(
        tally,
        ctx.timing,
        {
            **extra,
            "producers": PRODUCERS,
            "in_flight_per_producer": 1,
            "concurrency": PRODUCERS,
            "events_per_append": per_append,
            "streams": STREAMS,
            "client": "8 threads, one psycopg connection each: SELECT max(version), "
            + ("one executemany (pipelined) for the INSERTs" if batched else "one INSERT per event")
            + ", COMMIT",
        },
    )


# ------------------------------------------------------------------- raw Kafka, flat out


def raw_kafka_flat(ctx: Context, name: str) -> dict[str, Any]:
    """The CPU reference: one confluent-kafka producer pushing the same messages (key, value,
    CloudEvents headers, acks=all, idempotence) as fast as it can, with no append to wait for;
    the rate counts delivery reports received inside the window."""
    settings = ctx.settings.replace(topic=f"{ctx.settings.topic}-flat")
    from kafkastore import topic

    topic.ensure_topic(settings)
    ctx.env.add_topic(settings.topic)
    producer = kafka.producer(settings)
    timing = ctx.timing
    stop = threading.Event()
    delivered = [0, 0]  # all, inside the window
    errors = [0]
    window = [float("inf"), float("inf")]

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors[0] += 1
            return
        delivered[0] += 1
        if window[0] <= time.perf_counter() <= window[1]:
            delivered[1] += 1

    def push(producer: Any) -> None:
        seq = itertools.count()
        headers = encode_headers(
            event_id=new_event_id(),
            event_type=EVENT_TYPE,
            stream_id="flat-0000",
            version=1,
            content_type="application/json",
            source=settings.source,
            time=format_time(datetime.now(UTC)),
            write_id=str(uuid.uuid4()),
            xid=1000,
            sysid="7300000000000000000",
            metadata=None,
            metadata_json=None,
        )
        keys = [s.encode() for s in stream_ids("flat", STREAMS)]
        while not stop.is_set():
            i = next(seq)
            try:
                producer.produce(
                    settings.topic,
                    value=orjson.dumps(event_data(i)),
                    key=keys[i % STREAMS],
                    headers=headers,
                    on_delivery=report,
                )
            except BufferError:
                producer.poll(0.005)
                continue
            if i % 1000 == 0:
                producer.poll(0)

    pusher = threading.Thread(target=push, args=(producer,), daemon=True, name="bench-flat")
    probe = ctx.probe("bench")
    start = time.perf_counter()
    window[0], window[1] = start + timing.warmup, start + timing.warmup + timing.measure
    pusher.start()
    with drive.bar(ctx.progress, name, timing.warmup + timing.measure) as update:
        measuring = False
        while (elapsed := time.perf_counter() - start) < timing.warmup + timing.measure:
            if not measuring and elapsed >= timing.warmup:
                probe.start()
                measuring = True
            update(elapsed, f"{delivered[0]:,} delivered")
            time.sleep(0.25)
        extra = probe.stop()
    stop.set()
    pusher.join(10.0)
    producer.flush(30.0)
    del producer, pusher  # let the producer go here, in the main thread
    gc.collect()
    return {
        "events_per_s": round(delivered[1] / timing.measure, 1),
        "duration_s": timing.measure,
        "warmup_s": timing.warmup,
        "errors": errors[0],
        "concurrency": "one producer thread, flat out",
        "client": "confluent-kafka Producer.produce in a loop (poll every 1 000 messages); "
        f"acks=all, idempotence, linger.ms={settings.linger_ms}",
        **extra,
    }
