"""The consumer runtime: a Kafka consumer group turned into verdict-judged, per-partition batches.

Both the indexer and user subscriptions are built on :class:`BatchLoop` (docs/design.md
sections 6, 8).

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
``partition.assignment.strategy=cooperative-sticky`` (or ``group.protocol=consumer``) also works:
the loop then uses incremental assign/unassign. Membership is static (:mod:`consumers.membership`).

Around this module: the value types it hands on (:mod:`consumers.batches`), step 2
(:mod:`consumers.judge`), the counters behind :meth:`BatchLoop.stats` (:mod:`consumers.loopstats`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition

from consumers import membership
from consumers.batches import BatchHandler, PartitionBatch, PhantomRecord, StagedHandler
from consumers.checkpoints import PgCheckpoints
from consumers.judge import judge
from consumers.loopstats import LoopStats
from consumers.offsets import KafkaOffsets
from consumers.stopflag import StopFlag
from kafkastore import kafka, pg
from kafkastore.config import Settings
from kafkastore.errors import IntegrityError, KafkaStoreError
from kafkastore.verdict import VerdictResolver

__all__ = ["BatchHandler", "BatchLoop", "PartitionBatch", "PhantomRecord"]

logger = logging.getLogger("kafkastore.consumers")


class BatchLoop:
    """Polls a consumer group, decodes, judges (see the module's steps 1-3) and hands
    per-partition batches to a handler.

    ``checkpoints`` given: exactly-once (offsets stored in the handler's transaction, fenced);
    None: at-least-once (Kafka offsets committed after the handler). ``on_phantom`` sees every
    phantom once its batch was applied. ``commit_to_kafka=False`` skips the (lag-only) Kafka
    commit of exactly-once mode.
    """

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
        self._config = config
        self._cooperative = membership.incremental(settings, config)
        self.stop_flag = StopFlag()
        """Raised by :meth:`stop`; sleeps of the loop's owner (retry waits) watch it too."""
        self._running = False
        self._consumer: Consumer | None = None
        self._conn: psycopg.Connection | None = None
        self._resolver: VerdictResolver | None = None
        # Next offset this loop expects per assigned partition (None: Kafka's committed offset).
        self._position: dict[int, int] = {}
        self._offsets = KafkaOffsets(group, self.topic)
        self._stats = LoopStats(group=group, topic=self.topic)

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch (thread-safe, signal-safe)."""
        self.stop_flag.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self.stop_flag.is_set()

    @property
    def resolver_queries(self) -> int:
        """Verdict statements run so far (one per batch in the common case)."""
        return self._resolver.queries if self._resolver is not None else 0

    def run(self, handler: BatchHandler) -> None:
        """Block until :meth:`stop`, handing batches to ``handler``. Handler exceptions
        propagate (the current batch is then neither checkpointed nor committed)."""
        if self._running:
            raise RuntimeError("BatchLoop.run() is already running")
        # Connect before marking the loop running: when PostgreSQL is down the owner's restart
        # loop (Subscription, the indexer) waits and calls run() again, which must not find a
        # loop that never started still "running".
        conn = pg.connect(self.settings.database_url, autocommit=True)
        self._running = True
        consumer: Consumer | None = None
        try:
            self._conn = conn
            self._resolver = VerdictResolver(pg.system_identifier(conn))
            config = membership.consumer_config(conn, self.settings, self.group, self._config)
            consumer = kafka.consumer(self.settings, self.group, **config)
            self._consumer = consumer
            consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not self.stopping:
                self._iterate(consumer, conn, handler)
        finally:
            self._running = False
            if consumer is not None:
                # Asynchronous: closing must not wait on a broker that is gone.
                self._offsets.flush(consumer)
                try:
                    # A static member stays in the group (membership). Every handled batch
                    # was stored already (and its lag-only offsets are sent just above).
                    with kafka.translated():
                        consumer.close()
                except (KafkaStoreError, RuntimeError) as exc:
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
        self._stats.on_assign({p: starts.get(p) for p in numbers})
        for p in numbers:
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
            with kafka.translated():
                committed = consumer.committed(
                    [TopicPartition(self.topic, tp.partition) for tp in partitions], timeout=10.0
                )
        except KafkaStoreError as exc:
            logger.warning("group %r: cannot read committed offsets: %s", self.group, exc)
            return {}
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

    def _initial_offset(self, consumer: Consumer, partition: int) -> int:
        """Where a partition with no stored checkpoint starts: the low watermark (the first
        event still in the topic), or the high watermark when not from the beginning."""
        with kafka.translated():
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=10.0, cached=False
            )
        return int(low if self.from_beginning else high)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Revocation is served inside consume(), i.e. between batches: everything handled was
        # already committed, and messages fetched for these partitions are dropped unhandled.
        numbers = [tp.partition for tp in partitions]
        logger.info("group %r revoked %s of %r", self.group, numbers, self.topic)
        self._offsets.flush(consumer)
        self._stats.on_revoke(numbers)
        for p in numbers:
            self._position.pop(p, None)
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
            self._offsets.flush(consumer)
            return
        by_partition: dict[int, list[Any]] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_message_error(error)
                continue
            p, offset = msg.partition(), msg.offset()
            if p is None or offset is None or p not in self._stats.assigned:
                continue  # fetched before a revocation served in the same consume()
            expected = self._position.get(p)
            if expected is not None and offset < expected:
                continue  # fetched before a seek back
            if expected is not None and offset > expected and p not in by_partition:
                # The partition resumed past where we stand: librdkafka reset an offset that is
                # gone from the topic (retention, a recreated topic) or a seek back failed.
                # Moving on would store a position past messages nobody judged: an alarm, never
                # a silent skip (docs/design.md section 6).
                raise IntegrityError(
                    f"group {self.group!r}: partition {p} of {self.topic!r} resumed at offset "
                    f"{offset}, but the next message to handle is {expected}; refusing to skip"
                )
            by_partition.setdefault(p, []).append(msg)
        if not by_partition:
            return
        assert self._resolver is not None
        judged = judge(
            self._resolver,
            conn,
            self.topic,
            by_partition,
            self._position,
            timeout=self.verdict_wait,
        )
        for h in judged.held:
            # Fetch the PENDING message again next time (seek discards what librdkafka
            # prefetched after it).
            self._stats.held(h.partition, h.offset, h.xid)
            self._seek(consumer, h.partition, h.offset)
        batches = judged.batches
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
            # recreated). An alarm, never a silent skip (docs/design.md section 6).
            raise IntegrityError(
                f"group {self.group!r} lost its position in {self.topic!r}: {error.str()}"
            )
        if error.fatal() or code == KafkaError._FATAL:
            # E.g. FENCED_INSTANCE_ID: another member took our group.instance.id (membership).
            raise kafka.translate_error(error)
        logger.warning("group %r: Kafka reported %s", self.group, error.str())

    def _apply_exactly_once(
        self,
        conn: psycopg.Connection,
        consumer: Consumer,
        handler: BatchHandler,
        batches: list[PartitionBatch],
    ) -> list[PartitionBatch]:
        assert self.checkpoints is not None
        starts = {b.partition: b.first_offset for b in batches}
        # BEGIN and the checkpoint locks in one round trip, the new checkpoints and COMMIT in
        # another (pipelined); the handler runs between the two, outside pipeline mode. (Not
        # conn.transaction(): a transaction begun in pipeline mode keeps the pipeline on.)
        # A StagedHandler's first and last statements ride in these two round trips.
        staged = handler if isinstance(handler, StagedHandler) else None
        begin = None if staged is None else functools.partial(staged.begin, batches=batches)
        try:
            with pg.translated():
                with conn.pipeline():
                    pg.execute(conn, "BEGIN")
                    stored = self.checkpoints.lock(conn, self.topic, starts, then=begin)
                fenced = {p for p, first in starts.items() if stored.get(p) != first}
                valid = [b for b in batches if b.partition not in fenced]
                if valid:
                    handler(conn, valid)
                with conn.pipeline():
                    if staged is not None:
                        staged.end(conn)
                    if valid:
                        self.checkpoints.advance(
                            conn, self.topic, {b.partition: b.next_offset for b in valid}
                        )
                    pg.execute(conn, "COMMIT")
        except BaseException:
            pg.discard(conn)  # ROLLBACK (a connection too broken for that is closed)
            raise
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
            self._stats.fenced(p)
            if p in stored:
                self._seek(consumer, p, stored[p])
        for b in valid:
            self._position[b.partition] = b.next_offset
        if valid and self.commit_to_kafka:
            # For lag tooling only; PostgreSQL is the truth (consumers.offsets).
            self._offsets.stored(consumer, {b.partition: b.next_offset for b in valid})
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
        offsets = [TopicPartition(self.topic, b.partition, b.next_offset) for b in batches]
        self._offsets.commit(consumer, offsets, asynchronous=False)
        return batches

    def _seek(self, consumer: Consumer, partition: int, offset: int) -> None:
        self._position[partition] = offset
        try:
            with kafka.translated():
                consumer.seek(TopicPartition(self.topic, partition, offset))
        except KafkaStoreError as exc:
            # The partition was revoked meanwhile: its next owner starts from the checkpoint.
            logger.info("group %r: seek %s to %s failed: %s", self.group, partition, offset, exc)

    # -- statistics --------------------------------------------------------------------------

    def _refresh_watermarks(self, consumer: Consumer) -> None:
        for p in self._stats.partitions():
            try:
                with kafka.translated():
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), cached=True
                    )
            except KafkaStoreError:
                continue
            if high is not None and high != OFFSET_INVALID and high >= 0:
                self._stats.high_watermark(p, int(high))

    def _account(self, applied: Sequence[PartitionBatch]) -> None:
        self._stats.applied(applied)
        if self.on_phantom is not None:
            for b in applied:
                for phantom in b.phantoms:
                    self.on_phantom(phantom)

    def stats(self) -> dict[str, Any]:
        """Per-partition position, high watermark, lag, totals and events/s (thread-safe)."""
        return self._stats.snapshot(running=self._running)
