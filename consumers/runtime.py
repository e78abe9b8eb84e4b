"""The consumer runtime: a Kafka consumer group turned into verdict-judged, per-partition batches.

Both the indexer and user subscriptions are built on :class:`BatchLoop` (DESIGN.md sections 6, 8).

One loop iteration:

1. ``consume()`` up to ``max_batch`` messages (rebalance callbacks run only inside this call, so
   they always fall *between* batches: the in-flight batch has been handled and committed, or
   was abandoned by an exception, before any partition is revoked).
2. Decode; judge every event with the kernel's :class:`~kafkastore.verdict.VerdictResolver`
   (one marker query per batch in the common case, waiting at most ``verdict_wait`` while a
   writer may still run). A partition stops before its first PENDING message and is re-fetched
   from there (``seek``): nothing past an unsettled message is ever handled or committed.
3. With checkpoints (exactly-once into PostgreSQL): ``BEGIN``; lock the partitions' checkpoint
   rows and drop the batches of fenced partitions (another instance moved on; re-seek them to
   the stored offset); ``handler(conn, batches)``; advance the checkpoints; ``COMMIT``; then
   commit the same offsets to Kafka asynchronously, only for lag tooling.
   Without checkpoints (at-least-once): ``handler(conn, batches)`` in a transaction, then commit
   the offsets to Kafka synchronously. A crash between the two re-delivers the batch.

Assignment strategy: the default eager assignor (``range,roundrobin``). On assignment the loop
seeks every partition explicitly (stored checkpoint, else the low watermark, or the high one
when not ``from_beginning``), which is what ``auto.offset.reset=none`` requires. Setting
``partition.assignment.strategy=cooperative-sticky`` in ``consumer_config`` also works: the loop
then uses incremental assign/unassign.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.checkpoints import PgCheckpoints
from kafkastore import codec, kafka, pg
from kafkastore.codec import WireEvent
from kafkastore.config import Settings
from kafkastore.errors import IntegrityError
from kafkastore.records import RecordedEvent
from kafkastore.verdict import PhantomReason, Verdict, VerdictResolver

logger = logging.getLogger("kafkastore.consumers")


class PhantomRecord(NamedTuple):
    """A message of the topic that is not a real event (never handed to a handler)."""

    partition: int
    offset: int
    event: WireEvent | None
    """The decoded event, or None when the message could not be decoded."""
    reason: PhantomReason


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """The settled messages of one partition from one poll, in offset order."""

    topic: str
    partition: int
    first_offset: int
    """Offset the batch starts at (what the stored checkpoint must equal)."""
    next_offset: int
    """Offset to store after applying it (last settled message + 1)."""
    events: tuple[RecordedEvent, ...]
    """Real events only, in offset order."""
    phantoms: tuple[PhantomRecord, ...]
    """Messages judged phantoms (or malformed), in offset order."""
    wire: tuple[WireEvent, ...] = ()
    """The decoded messages of ``events`` (same order)."""
    messages: tuple[Message, ...] = ()
    """The Kafka messages of ``events`` (same order): key, value and headers as produced
    (dead letters copy them)."""


def _offset(msg: Message) -> int:
    offset = msg.offset()
    assert offset is not None  # only error messages have none, and those were filtered out
    return offset


BatchHandler = Callable[[psycopg.Connection, Sequence[PartitionBatch]], None]


@dataclass(slots=True)
class _PartitionStats:
    position: int | None = None
    high_watermark: int | None = None
    events: int = 0
    phantoms: int = 0
    fenced: int = 0
    held_offset: int | None = None
    """Offset of the first PENDING message the partition is stopped at (None: not held)."""
    held_xid: int | None = None
    held_since: float = 0.0


class BatchLoop:
    """Polls a consumer group, decodes, judges with the kernel's VerdictResolver (one marker query
    per batch in the common case, waiting only while a writer may still run; a partition stops
    before its first PENDING message and is re-polled from there - seek), and hands per-partition
    batches to a handler."""

    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        checkpoints: PgCheckpoints | None,
        max_batch: int = 5000,
        poll_timeout: float = 0.2,
        verdict_wait: float = 1.0,
        from_beginning: bool = True,
        consumer_config: Mapping[str, Any] | None = None,
        on_phantom: Callable[[PhantomRecord], None] | None = None,
        commit_to_kafka: bool = True,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.group = group
        self.checkpoints = checkpoints
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.verdict_wait = verdict_wait
        self.from_beginning = from_beginning
        self.on_phantom = on_phantom
        self.commit_to_kafka = commit_to_kafka
        config: dict[str, Any] = {
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            **(consumer_config or {}),
        }
        self._consumer_config = config
        self._cooperative = config.get("partition.assignment.strategy") == "cooperative-sticky"
        # A plain attribute, not an Event: assigning a bool is safe inside a signal handler.
        self._stopping = False
        self._running = False
        self._consumer: Consumer | None = None
        self._conn: psycopg.Connection | None = None
        self._resolver: VerdictResolver | None = None
        self._assigned: set[int] = set()
        # Next offset this loop expects per assigned partition (None: Kafka's committed offset).
        self._position: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stats: dict[int, _PartitionStats] = {}
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._total_events = 0
        self._total_phantoms = 0
        self._verdict_waits = 0
        self._batches = 0
        self._started_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch (thread-safe, signal-safe)."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def resolver_queries(self) -> int:
        """Verdict statements run so far (one per batch in the common case)."""
        return self._resolver.queries if self._resolver is not None else 0

    def run(self, handler: BatchHandler) -> None:
        """Block until :meth:`stop`, handing batches to ``handler``. Handler exceptions
        propagate (the current batch is then neither checkpointed nor committed)."""
        if self._running:
            raise RuntimeError("BatchLoop.run() is already running")
        self._running = True
        self._started_at = time.monotonic()
        conn = pg.connect(self.settings.database_url, autocommit=True)
        consumer: Consumer | None = None
        try:
            self._conn = conn
            self._resolver = VerdictResolver(pg.system_identifier(conn))
            consumer = kafka.consumer(self.settings, self.group, **self._consumer_config)
            self._consumer = consumer
            consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not self._stopping:
                self._iterate(consumer, conn, handler)
        finally:
            self._running = False
            if consumer is not None:
                try:
                    # Leaves the group now (the next owner need not wait for the session
                    # timeout). Nothing is committed here: every handled batch already was.
                    consumer.close()
                except (KafkaException, RuntimeError) as exc:
                    logger.warning("closing the consumer of group %r failed: %s", self.group, exc)
            self._consumer = None
            self._conn = None
            conn.close()

    # -- rebalancing -------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        starts: dict[int, int] = {}
        if self.checkpoints is not None:
            assert self._conn is not None
            stored = self.checkpoints.load(self._conn, self.topic, numbers)
            for tp in partitions:
                if tp.partition in stored:
                    starts[tp.partition] = stored[tp.partition]
                else:
                    starts[tp.partition] = self._initial_offset(consumer, tp.partition)
        else:
            starts = self._committed(consumer, partitions)
        for tp in partitions:
            if tp.partition in starts:
                tp.offset = starts[tp.partition]
        logger.info("group %r assigned %s of %r at %s", self.group, numbers, self.topic, starts)
        with self._lock:
            for p in numbers:
                self._assigned.add(p)
                self._stats.setdefault(p, _PartitionStats()).position = starts.get(p)
                if p in starts:
                    self._position[p] = starts[p]
                else:
                    self._position.pop(p, None)
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[int, int]:
        """The group's committed Kafka offsets (at-least-once mode); partitions without one are
        left to ``auto.offset.reset``."""
        try:
            committed = consumer.committed(
                [TopicPartition(self.topic, tp.partition) for tp in partitions], timeout=10.0
            )
        except KafkaException as exc:
            logger.warning("group %r: cannot read committed offsets: %s", self.group, exc)
            return {}
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

    def _initial_offset(self, consumer: Consumer, partition: int) -> int:
        """Where a partition with no stored checkpoint starts: the low watermark (the first
        event still in the topic), or the high watermark when not from the beginning."""
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=10.0, cached=False
            )
        except KafkaException as exc:
            raise kafka.translate(exc) or exc from exc
        return int(low if self.from_beginning else high)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Revocation is served inside consume(), i.e. between batches: everything handled was
        # already committed, and messages fetched for these partitions are dropped unhandled.
        numbers = [tp.partition for tp in partitions]
        logger.info("group %r revoked %s of %r", self.group, numbers, self.topic)
        with self._lock:
            for p in numbers:
                self._assigned.discard(p)
                self._position.pop(p, None)
                self._stats.pop(p, None)
        if self._cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    # -- one iteration -----------------------------------------------------------------------

    def _iterate(self, consumer: Consumer, conn: psycopg.Connection, handler: BatchHandler) -> None:
        # Wait for the first message only, then take what is already fetched: consume() with a
        # timeout would wait the whole timeout for a full batch, adding it to the index lag at
        # low rates. Batches still grow under load (what arrived while the last one was applied).
        first = consumer.poll(self.poll_timeout)
        messages = [] if first is None else [first]
        if first is not None and self.max_batch > 1:
            messages.extend(consumer.consume(num_messages=self.max_batch - 1, timeout=0))
        self._refresh_watermarks(consumer)
        if not messages:
            return
        by_partition: dict[int, list[Any]] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_message_error(error)
                continue
            p, offset = msg.partition(), msg.offset()
            if p is None or offset is None or p not in self._assigned:
                continue  # fetched before a revocation served in the same consume()
            expected = self._position.get(p)
            if expected is not None and offset < expected:
                continue  # fetched before a seek back
            if expected is not None and offset > expected and p not in by_partition:
                # The partition resumed past where we stand: librdkafka reset an offset that is
                # gone from the topic (retention, a recreated topic) or a seek back failed.
                # Moving on would store a position past messages nobody judged: an alarm, never
                # a silent skip (DESIGN.md section 6).
                raise IntegrityError(
                    f"group {self.group!r}: partition {p} of {self.topic!r} resumed at offset "
                    f"{offset}, but the next message to handle is {expected}; refusing to skip"
                )
            by_partition.setdefault(p, []).append(msg)
        if not by_partition:
            return
        batches = self._judge(conn, consumer, by_partition)
        if not batches:
            return
        if self.checkpoints is not None:
            applied = self._apply_exactly_once(conn, consumer, handler, batches)
        else:
            applied = self._apply_at_least_once(conn, consumer, handler, batches)
        self._account(applied)

    def _on_message_error(self, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code == KafkaError._AUTO_OFFSET_RESET:
            # auto.offset.reset=none: the stored position is gone from the topic (truncated or
            # recreated). An alarm, never a silent skip (DESIGN.md section 6).
            raise IntegrityError(
                f"group {self.group!r} lost its position in {self.topic!r}: {error.str()}"
            )
        if error.fatal():
            raise kafka.translate_error(error)
        logger.warning("group %r: Kafka reported %s", self.group, error.str())

    def _judge(
        self, conn: psycopg.Connection, consumer: Consumer, by_partition: dict[int, list[Any]]
    ) -> list[PartitionBatch]:
        assert self._resolver is not None
        decoded: dict[int, list[WireEvent | None]] = {}
        wires: list[WireEvent] = []
        for p, msgs in by_partition.items():
            row: list[WireEvent | None] = []
            for msg in msgs:
                try:
                    event = codec.decode(msg)
                except codec.MalformedMessage as exc:
                    logger.error(
                        "message %s/%s of %r is not a kafkastore event: %s",
                        p,
                        msg.offset(),
                        self.topic,
                        exc,
                    )
                    row.append(None)
                    continue
                row.append(event)
                wires.append(event)
            decoded[p] = row
        judgements = self._resolver.judge_until_settled(conn, wires, timeout=self.verdict_wait)
        verdicts = {(w.partition, w.offset): j for w, j in zip(wires, judgements, strict=True)}
        batches: list[PartitionBatch] = []
        for p, msgs in by_partition.items():
            events: list[RecordedEvent] = []
            real: list[WireEvent] = []
            real_messages: list[Message] = []
            phantoms: list[PhantomRecord] = []
            first = self._position.get(p, _offset(msgs[0]))
            next_offset = first
            for msg, wire in zip(msgs, decoded[p], strict=True):
                offset = _offset(msg)
                if wire is None:
                    phantoms.append(PhantomRecord(p, offset, None, PhantomReason.MALFORMED))
                else:
                    judgement = verdicts[(p, offset)]
                    if judgement.verdict is Verdict.PENDING:
                        # Never move past a message whose writer may still commit: fetch it
                        # again next time (seek discards what librdkafka prefetched).
                        self._hold(p, offset, wire.xid)
                        self._seek(consumer, p, offset)
                        break
                    if judgement.verdict is Verdict.REAL:
                        events.append(wire.recorded())
                        real.append(wire)
                        real_messages.append(msg)
                    else:
                        assert judgement.reason is not None
                        phantoms.append(PhantomRecord(p, offset, wire, judgement.reason))
                next_offset = offset + 1
            if next_offset == first:
                continue
            batches.append(
                PartitionBatch(
                    topic=self.topic,
                    partition=p,
                    first_offset=first,
                    next_offset=next_offset,
                    events=tuple(events),
                    phantoms=tuple(phantoms),
                    wire=tuple(real),
                    messages=tuple(real_messages),
                )
            )
        return batches

    def _apply_exactly_once(
        self,
        conn: psycopg.Connection,
        consumer: Consumer,
        handler: BatchHandler,
        batches: list[PartitionBatch],
    ) -> list[PartitionBatch]:
        assert self.checkpoints is not None
        starts = {b.partition: b.first_offset for b in batches}
        with pg.translated(), conn.transaction():
            stored = self.checkpoints.lock(conn, self.topic, starts)
            fenced = {p for p, first in starts.items() if stored.get(p) != first}
            valid = [b for b in batches if b.partition not in fenced]
            if valid:
                handler(conn, valid)
                self.checkpoints.advance(
                    conn, self.topic, {b.partition: b.next_offset for b in valid}
                )
        for p in sorted(fenced):
            logger.warning(
                "group %r: partition %s of %r is at %s in PostgreSQL, this batch starts at %s "
                "(another instance moved on): batch dropped, re-seeking",
                self.group,
                p,
                self.topic,
                stored.get(p),
                starts[p],
            )
            with self._lock:
                if p in self._stats:
                    self._stats[p].fenced += 1
            if p in stored:
                self._seek(consumer, p, stored[p])
        for b in valid:
            self._position[b.partition] = b.next_offset
        if valid and self.commit_to_kafka:
            # For lag tooling only; PostgreSQL is the truth. Asynchronous: nothing depends on it.
            self._commit(consumer, valid, asynchronous=True)
        return valid

    def _apply_at_least_once(
        self,
        conn: psycopg.Connection,
        consumer: Consumer,
        handler: BatchHandler,
        batches: list[PartitionBatch],
    ) -> list[PartitionBatch]:
        with pg.translated(), conn.transaction():
            handler(conn, batches)
        for b in batches:
            self._position[b.partition] = b.next_offset
        # Only after the handler returned for everything before these offsets. Synchronous, so
        # a rebalance that follows never hands the partition over behind work already done.
        self._commit(consumer, batches, asynchronous=False)
        return batches

    def _commit(
        self, consumer: Consumer, batches: Sequence[PartitionBatch], *, asynchronous: bool
    ) -> None:
        offsets = [TopicPartition(self.topic, b.partition, b.next_offset) for b in batches]
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A rebalance raced with the commit: the new owner re-delivers from the last
            # committed offset (at-least-once); the next commit of this loop covers the rest.
            logger.warning("group %r: offset commit failed: %s", self.group, exc)

    def _hold(self, partition: int, offset: int, xid: int) -> None:
        """Record that a partition waits behind a running writer (stats, stuck-writer alarm)."""
        with self._lock:
            self._verdict_waits += 1
            st = self._stats.setdefault(partition, _PartitionStats())
            if st.held_offset != offset:
                st.held_offset, st.held_xid, st.held_since = offset, xid, time.monotonic()

    def _seek(self, consumer: Consumer, partition: int, offset: int) -> None:
        self._position[partition] = offset
        try:
            consumer.seek(TopicPartition(self.topic, partition, offset))
        except KafkaException as exc:
            # The partition was revoked meanwhile: its next owner starts from the checkpoint.
            logger.info("group %r: seek %s to %s failed: %s", self.group, partition, offset, exc)

    # -- statistics --------------------------------------------------------------------------

    def _refresh_watermarks(self, consumer: Consumer) -> None:
        with self._lock:
            parts = list(self._stats.items())
        for p, st in parts:
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), cached=True
                )
            except KafkaException:
                continue
            if high is not None and high != OFFSET_INVALID and high >= 0:
                st.high_watermark = int(high)

    def _account(self, applied: Sequence[PartitionBatch]) -> None:
        now = time.monotonic()
        with self._lock:
            self._batches += 1
            for b in applied:
                st = self._stats.setdefault(b.partition, _PartitionStats())
                st.position = b.next_offset
                if st.held_offset is not None and b.next_offset > st.held_offset:
                    st.held_offset, st.held_xid = None, None
                st.events += len(b.events)
                st.phantoms += len(b.phantoms)
                self._total_events += len(b.events)
                self._total_phantoms += len(b.phantoms)
            self._rate.append((now, self._total_events))
        if self.on_phantom is not None:
            for b in applied:
                for phantom in b.phantoms:
                    self.on_phantom(phantom)

    def stats(self) -> dict[str, Any]:
        """Per-partition position, high watermark, lag, totals and events/s (thread-safe)."""
        now = time.monotonic()
        with self._lock:
            partitions = {}
            total_lag = 0
            for p, st in sorted(self._stats.items()):
                lag = None
                if st.position is not None and st.high_watermark is not None:
                    lag = max(0, st.high_watermark - st.position)
                    total_lag += lag
                partitions[p] = {
                    "position": st.position,
                    "high_watermark": st.high_watermark,
                    "lag": lag,
                    "events": st.events,
                    "phantoms": st.phantoms,
                    "fenced": st.fenced,
                    "held_offset": st.held_offset,
                    "held_xid": st.held_xid,
                    "held_for": now - st.held_since if st.held_offset is not None else 0.0,
                }
            rate = 0.0
            recent = [(t, n) for t, n in self._rate if now - t <= 10.0]
            if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
                rate = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
            return {
                "group": self.group,
                "topic": self.topic,
                "running": self._running,
                "assigned": sorted(self._assigned),
                "partitions": partitions,
                "lag": total_lag,
                "verdict_waits": self._verdict_waits,
                "events": self._total_events,
                "phantoms": self._total_phantoms,
                "batches": self._batches,
                "events_per_second": rate,
            }
