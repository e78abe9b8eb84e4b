"""``kafkastore indexer``: the index projection on the consumer runtime (docs/design.md section 6).

The indexer is a :class:`~consumers.runtime.BatchLoop` with checkpoints in ``index_checkpoints``
(exactly once: offsets are stored in the transaction that writes the rows, and a batch whose
stored offset moved on is dropped - the fencing of zombies after a rebalance) and
:func:`indexer.projection.apply` as its handler. ``auto.offset.reset=none``: the runtime seeks
every assigned partition to its stored checkpoint (or the low watermark the first time), and a
position that vanished from the topic (truncated or recreated) is an alarm, not a silent skip.

Several instances may run on one group: Kafka splits the partitions between them, and the
``index_head`` row lock orders their commits into one gap-free sequence of global positions.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from consumers.checkpoints import PgCheckpoints
from consumers.runtime import BatchLoop, PartitionBatch
from consumers.stopflag import StopFlag
from indexer import metrics, projection, scavenge
from kafkastore import schema, topic
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError, KafkaStoreError, Unavailable
from kafkastore.retry import Backoff
from kafkastore.signals import stop_signals

logger = logging.getLogger("kafkastore.indexer")

PROGRESS_EVERY = 10.0
"""Seconds between progress lines in the log."""

TICK = 0.5
"""Seconds between two looks of the background ticker at the loop's stats."""

RESTARTS = Backoff(initial=0.5, maximum=10.0)
"""Waits between restarts of the loop after an outage of Kafka or PostgreSQL."""


class Indexer:
    """One indexer instance. :meth:`run` blocks until :meth:`stop` (thread- and signal-safe)."""

    def __init__(self, settings: Settings, *, poll_timeout: float = 0.2) -> None:
        self.settings = settings
        self.poll_timeout = poll_timeout
        self._stop = StopFlag()
        self._loop: BatchLoop | None = None
        self._held: dict[int, tuple[int | None, float]] = {}
        self._alarmed: set[int] = set()
        self._waits_seen = 0
        self._gauged: set[int] = set()
        self.indexed = 0
        self.phantoms = 0
        self.scavenged = 0

    def stop(self) -> None:
        """Return from :meth:`run` after the current batch (thread-safe, signal-safe)."""
        self._stop.set()
        loop = self._loop
        if loop is not None:
            loop.stop()

    def run(self) -> None:
        """Index until stopped. PostgreSQL or Kafka outages are waited out (the loop restarts
        from the stored checkpoints); IntegrityError and configuration errors propagate."""
        delays = RESTARTS.delays()
        ticker = threading.Thread(target=self._tick, name="kafkastore-indexer-ticker", daemon=True)
        ticker.start()
        scavenger = None
        if self.settings.scavenge_interval > 0:
            scavenger = threading.Thread(
                target=self._scavenge, name="kafkastore-indexer-scavenger", daemon=True
            )
            scavenger.start()
        while not self._stop.is_set():
            loop = BatchLoop(
                self.settings,
                group=self.settings.indexer_group,
                checkpoints=PgCheckpoints(table="index_checkpoints", group=None),
                max_batch=self.settings.indexer_batch_max,
                poll_timeout=self.poll_timeout,
                verdict_wait=1.0,
                from_beginning=True,
                # librdkafka spells auto.offset.reset=none "error": a vanished position raises.
                consumer_config={
                    "auto.offset.reset": "error",
                    # librdkafka prefetches up to 64 MiB per consumer by default; a few batches
                    # ahead is enough to keep the indexer busy and bounds its memory.
                    "queued.max.messages.kbytes": 16384,
                },
            )
            self._loop = loop
            if self._stop.is_set():
                break
            try:
                loop.run(_Staged(self))
            except Unavailable as exc:
                delay = next(delays)
                logger.warning("indexer: %s; restarting in %.1fs", exc.message, delay)
                self._stop.wait(delay)
        self._loop = None
        ticker.join(timeout=2.0)
        if scavenger is not None:
            scavenger.join(timeout=10.0)
        logger.info("indexer stopped: %d events indexed, %d phantoms", self.indexed, self.phantoms)

    def _handle(
        self,
        conn: psycopg.Connection,
        batches: Sequence[PartitionBatch],
        begun: projection.Begun | None,
    ) -> projection.Applied:
        started = time.perf_counter()
        applied = projection.apply(conn, batches, begun)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        # Counted before COMMIT: a rolled-back batch is counted again when re-applied, so these
        # are "work done" counters, not the index size (which is index_head.last_position).
        metrics.EVENTS_INDEXED.inc(applied.indexed)
        metrics.DUPLICATES.inc(applied.duplicates)
        self.indexed += applied.indexed
        self.phantoms += applied.phantoms
        now = datetime.now(UTC)
        for b in batches:
            for p in b.phantoms:
                metrics.PHANTOMS_SKIPPED.labels(p.reason.value).inc()
            if b.wire:
                age = (now - b.wire[-1].time).total_seconds()
                metrics.LAG_SECONDS.labels(str(b.partition)).set(max(0.0, age))
        return applied

    def _scavenge(self) -> None:
        """Background passes of the scavenger (indexer.scavenge), every ``scavenge_interval``;
        an outage is logged and the next pass tries again."""
        while not self._stop.wait(self.settings.scavenge_interval):
            try:
                done = scavenge.scavenge(self.settings, should_stop=self._stop.is_set)
            except KafkaStoreError as exc:
                logger.warning("scavenger: %s; trying again later", exc.message)
                continue
            self.scavenged += done.rows
            if done.rows:
                logger.info(
                    "scavenger removed %d hidden events in %.2fs (%.0f rows/s)",
                    done.rows,
                    done.seconds,
                    done.rate,
                )

    # -- background: lag gauges, progress lines, the stuck-writer alarm ---------------------

    def _tick(self) -> None:
        last_log = time.monotonic()
        last_count = 0
        while not self._stop.wait(TICK):
            loop = self._loop
            if loop is None:
                continue
            stats = loop.stats()
            self._observe(stats)
            now = time.monotonic()
            if now - last_log >= PROGRESS_EVERY:
                rate = (self.indexed - last_count) / (now - last_log)
                if stats.get("assigned"):
                    logger.info(
                        "indexer: %d events indexed (%.0f/s), %d phantoms, lag %s, partitions %s",
                        self.indexed,
                        rate,
                        self.phantoms,
                        stats.get("lag"),
                        stats.get("assigned"),
                    )
                else:
                    logger.warning(
                        "indexer: owns no partition of %r (group %r is rebalancing, or another "
                        "member holds them): nothing is indexed, the lag is unknown",
                        self.settings.topic,
                        self.settings.indexer_group,
                    )
                last_log, last_count = now, self.indexed

    def _observe(self, stats: dict[str, Any]) -> None:
        now = time.monotonic()
        waits = stats.get("verdict_waits")
        if isinstance(waits, int):
            if waits > self._waits_seen:
                metrics.VERDICT_WAITS.inc(waits - self._waits_seen)
            self._waits_seen = waits
        owned = set(stats.get("assigned", ()))
        metrics.OWNED_PARTITIONS.set(len(owned))
        for p in self._gauged - owned:
            # Not ours any more: no lag series rather than a stale (or zero) one.
            for gauge in (metrics.LAG_OFFSETS, metrics.LAG_SECONDS):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(p))
        self._gauged = owned
        for p, st in stats.get("partitions", {}).items():
            lag = st.get("lag")
            if lag is not None:
                metrics.LAG_OFFSETS.labels(str(p)).set(lag)
                if lag == 0:
                    metrics.LAG_SECONDS.labels(str(p)).set(0.0)
            position = st.get("position")
            if "held_for" in st:
                held_for = float(st["held_for"] or 0.0)
                where: Any = st.get("held_offset")
                xid = st.get("held_xid")
            else:
                # Fallback: a partition with lag whose position does not move.
                before, since = self._held.get(p, (None, now))
                if not lag or position != before:
                    self._held[p] = (position, now)
                    since = now
                held_for, where, xid = now - since, position, None
            if held_for >= self.settings.stuck_writer_alarm:
                if p not in self._alarmed:
                    self._alarmed.add(p)
                    logger.error(
                        "ALARM: partition %s of %r held at offset %s for %.0fs (writer xid %s "
                        "still in progress?); its transaction should have been aborted by "
                        "idle_in_transaction_session_timeout",
                        p,
                        self.settings.topic,
                        where,
                        held_for,
                        xid,
                    )
            elif p in self._alarmed:
                self._alarmed.discard(p)
                logger.info("partition %s of %r moves again", p, self.settings.topic)


class _Staged:
    """The indexer's handler, staged (consumers.batches.StagedHandler): the probe and head lock
    ride in the round trip of the checkpoint locks, the head's advance in that of COMMIT. A
    transaction of one small batch then takes four round trips: the locks, COPY (two), COMMIT."""

    def __init__(self, indexer: Indexer) -> None:
        self._indexer = indexer
        self._begun: projection.Begun | None = None
        self._applied: projection.Applied | None = None

    def begin(self, conn: psycopg.Connection, batches: Sequence[PartitionBatch]) -> None:
        self._begun = projection.begin(conn, batches)
        self._applied = None

    def __call__(self, conn: psycopg.Connection, batches: Sequence[PartitionBatch]) -> None:
        self._applied = self._indexer._handle(conn, batches, self._begun)

    def end(self, conn: psycopg.Connection) -> None:
        applied, self._applied, self._begun = self._applied, None, None
        if applied is not None:
            projection.advance_head(conn, applied)


def run(settings: Settings) -> int:
    """``kafkastore indexer``: block until SIGTERM/SIGINT, then stop after the current batch."""
    schema.require_current(settings.database_url)
    if topic.describe_topic(settings) is None:
        raise ConfigurationError(
            f"topic {settings.topic!r} does not exist: run `kafkastore topic create`"
        )
    indexer = Indexer(settings)

    def on_signal(signum: int) -> None:
        logger.info("indexer: %s received, stopping", signal.Signals(signum).name)
        indexer.stop()

    with stop_signals(on_signal):
        server = metrics.serve_indexer_metrics(settings) if settings.metrics_port else None
        logger.info(
            "indexer started: topic %r, group %r, batches of up to %d",
            settings.topic,
            settings.indexer_group,
            settings.indexer_batch_max,
        )
        try:
            indexer.run()
        finally:
            if server is not None:
                with contextlib.suppress(Exception):
                    server.shutdown()
    return 0
