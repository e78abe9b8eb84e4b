"""Subscriptions: Kafka consumer groups that hand committed events to your code.

``Subscription(group, handler)`` runs a :class:`~consumers.runtime.BatchLoop` over the events
topic: only real events (the verdict rule of docs/design.md section 2) reach the handler,
filtered by category and type *after* the verdict, one at a time, in offset order - so each
stream's events arrive in version order. Instances with the same ``group`` share the partitions.

Two delivery modes:

- **At-least-once** (a plain ``handler(event)``): Kafka offsets are committed only after the
  handler returned for every event before them. A crash re-delivers the uncommitted tail, so
  make the handler idempotent (e.g. keyed by ``event.id`` or ``(stream_id, version)``).
- **Exactly-once into PostgreSQL** (a :class:`PostgresProjection`): ``handle(conn, event)`` runs
  inside the transaction that also stores the group's offsets in ``subscription_checkpoints``,
  fenced against zombies after a rebalance (docs/design.md section 6). Each event runs in a
  savepoint, so a failed attempt leaves no trace.

Deleted and truncated streams (docs/http.md "Stream lifecycle"): events that no read may show when
their batch is delivered - their stream soft- or hard-deleted, below ``truncate_before``,
beyond ``max_count`` or ``max_age`` - are **skipped**, judged in PostgreSQL by the same rule as
every read (kafkastore.lifecycle.hidden, one query per batch), in both delivery modes. No
lifecycle record is handed over: a handler never sees a hidden event, and an event it saw
before its stream was deleted is not taken back. So a projection rebuilt from offset 0 after a
deletion holds exactly what reads show (nothing of a deleted stream, only the readable tail of
a truncated one); a live projection that must forget a deleted stream at once reads the
stream's metadata, or is rebuilt. ``stats()["hidden"]`` counts the skipped events.

Failures: an exception is retried with exponential backoff; after ``RetryPolicy.attempts`` the
event is copied to ``<topic>.dlq`` with error headers (:mod:`consumers.dlq`) and the subscription
moves on. ``dead_letter=False`` makes the error stop the subscription instead. An outage of Kafka
or PostgreSQL - also at start, before the projection's ``setup`` could run - is waited out with
a warning per attempt, never raised.

``run()`` talks (logger ``kafkastore.consumers``; printed to stderr at INFO when the application
configured no logging, :mod:`consumers.progress`): the group and its mode at start, the
partitions of each assignment, a progress line every 10 s, and the totals at stop.

Why this module is longer than ~400 lines: it is the public subscription API, and its
docstrings (the delivery guarantees, retries, dead letters, hidden events) are long on purpose;
the machinery lives in :mod:`consumers.runtime` and its helpers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar

import psycopg
from confluent_kafka import Message

from consumers import metrics
from consumers.checkpoints import PgCheckpoints
from consumers.dlq import DeadLetters
from consumers.progress import ProgressTicker, visible_logging
from consumers.retrypolicy import RetryPolicy
from consumers.runtime import BatchLoop, PartitionBatch
from kafkastore import lifecycle, pg
from kafkastore.config import Settings
from kafkastore.errors import Unavailable
from kafkastore.records import RecordedEvent
from kafkastore.retry import Backoff
from kafkastore.signals import stop_signals
from kafkastore.streams import check_category, check_event_type
from kafkastore.target import resolve

logger = logging.getLogger("kafkastore.consumers")

EventHandler = Callable[[RecordedEvent], None]
"""``handler(event)`` of an at-least-once subscription."""

RESTARTS = Backoff(initial=0.5, maximum=10.0)
"""Waits between restarts of the loop after an outage of Kafka or PostgreSQL."""


class PostgresProjection:
    """Base of exactly-once projections into PostgreSQL.

    Subclass, implement :meth:`handle` (and :meth:`setup` for your tables), then
    ``Subscription("my-group", MyProjection()).run()``. ``handle`` receives the connection of
    the transaction that also stores the group's position: write with it and do not commit.
    """

    categories: ClassVar[Sequence[str] | None] = None
    """Only events of these categories (class-level default for the subscription)."""
    event_types: ClassVar[Sequence[str] | None] = None
    """Only events of these types."""

    def setup(self, conn: psycopg.Connection) -> None:
        """Called once before the first event, in its own transaction (create your tables)."""

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        """Apply one event with ``conn`` (inside the subscription's transaction: do not commit).

        Raising rolls back this event's savepoint; the event is then retried or dead-lettered.
        """
        raise NotImplementedError


def _is_outage(conn: psycopg.Connection, exc: Exception) -> bool:
    # Kafka or PostgreSQL is down, not the event's fault. A psycopg error that the handler let
    # through counts when the boundary's table (kafkastore.pg.ERRORS) calls it Unavailable.
    if isinstance(exc, Unavailable) or isinstance(pg.translate(exc), Unavailable):
        return True
    return conn.closed or conn.broken


class _Abandoned(Exception):
    """stop() was called while an event was being retried: leave the batch uncommitted."""


class Subscription:
    """A consumer group handing committed events to ``handler`` (see the module docstring).

    ``run()`` blocks until :meth:`stop` (or SIGTERM/SIGINT when run in the main thread);
    ``start()`` runs it in a background thread; as a context manager it stops on exit.
    Configuration: ``settings``, else ``kafka``/``database_url``/``topic``, else the
    ``KAFKASTORE_*`` variables, else the running dev stack of the checkout it runs in
    (:mod:`kafkastore.target`), else the defaults.
    """

    def __init__(
        self,
        group: str,
        handler: EventHandler | PostgresProjection,
        *,
        categories: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        from_beginning: bool = True,
        settings: Settings | None = None,
        kafka: str | None = None,
        database_url: str | None = None,
        topic: str | None = None,
        retry: RetryPolicy | None = None,
        dead_letter: bool = True,
        metrics_port: int | None = None,
        max_batch: int = 500,
        poll_timeout: float = 0.2,
        verdict_wait: float = 1.0,
        consumer_config: Mapping[str, Any] | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        if not group:
            raise ValueError("a subscription needs a consumer group name")
        # Arguments > KAFKASTORE_* > the checkout's running dev stack > defaults.
        self.settings = (
            settings
            or resolve({"kafka": kafka, "database_url": database_url, "topic": topic}).settings
        )
        self.group = group
        self.projection = handler if isinstance(handler, PostgresProjection) else None
        self.handler = handler
        if self.projection is not None:
            categories = categories if categories is not None else self.projection.categories
            event_types = event_types if event_types is not None else self.projection.event_types
        self.categories = frozenset(check_category(c) for c in categories or ())
        self.event_types = frozenset(check_event_type(t) for t in event_types or ())
        self.retry = retry or RetryPolicy()
        self.dead_letters = DeadLetters(self.settings, group=group) if dead_letter else None
        port = metrics_port if metrics_port is not None else self.settings.metrics_port
        self.metrics_port = port or None
        self.install_signal_handlers = install_signal_handlers
        checkpoints = (
            PgCheckpoints(table="subscription_checkpoints", group=group)
            if self.projection is not None
            else None
        )
        self.loop = BatchLoop(
            self.settings,
            group=group,
            checkpoints=checkpoints,
            max_batch=max_batch,
            poll_timeout=poll_timeout,
            verdict_wait=verdict_wait,
            from_beginning=from_beginning,
            consumer_config=consumer_config,
        )
        self._delivered = 0
        self._filtered = 0
        self._hidden = 0
        self._retries = 0
        self._dead = 0
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        metrics.COLLECTOR.add(self)

    def __repr__(self) -> str:
        return f"Subscription(group={self.group!r}, topic={self.settings.topic!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        """Handle events until :meth:`stop`. Raises what the handler raised when dead
        letters are off; outages of Kafka or PostgreSQL are waited out with backoff."""
        with visible_logging(), stop_signals(self._on_signal, enabled=self.install_signal_handlers):
            if self.metrics_port:
                metrics.serve(self.metrics_port, self.settings.metrics_host)
            self._log_start()
            ticker = ProgressTicker(
                logger,
                self.stats,
                stop=self.loop.stop_flag,
                line=self._progress_line,
                count=lambda stats: int(stats["delivered"]) + int(stats["filtered"]),
            ).start()
            try:
                self._run_until_stopped()
            except _Abandoned:
                logger.info("%r stopped while retrying; the batch will be re-delivered", self)
            finally:
                self.loop.stop()  # also ends the ticker when the loop ended on an error
                ticker.join()
                if self.dead_letters is not None:
                    self.dead_letters.close()
                self._log_stop()

    def _run_until_stopped(self) -> None:
        # Outages of Kafka or PostgreSQL are waited out: the loop starts again from the last
        # committed position (re-delivering the batch it was in). Other errors propagate.
        delays = RESTARTS.delays()
        set_up = self.projection is None
        while not self.loop.stopping:
            try:
                if not set_up:
                    assert self.projection is not None
                    self._setup_projection(self.projection)
                    set_up = True
                self.loop.run(self._handle_batch)
            except Unavailable as exc:
                delay = next(delays)
                logger.warning(
                    "%r: %s; waiting for it, next try in %.1fs", self, exc.message, delay
                )
                self._sleep(delay)

    def _log_start(self) -> None:
        filters = []
        if self.categories:
            filters.append(f"categories {sorted(self.categories)}")
        if self.event_types:
            filters.append(f"types {sorted(self.event_types)}")
        logger.info(
            "subscription %r started on topic %r (%s%s%s); waiting for partitions",
            self.group,
            self.settings.topic,
            "exactly-once into PostgreSQL" if self.projection is not None else "at-least-once",
            ", " if filters else "",
            ", ".join(filters),
        )

    def _progress_line(self, stats: dict[str, Any], rate: float) -> str:
        return (
            f"subscription {self.group!r}: {stats['delivered']} events handled ({rate:.0f}/s), "
            f"{stats['filtered']} filtered out, {stats.get('phantoms', 0)} phantoms skipped, "
            f"{stats['dead_letters']} dead-lettered, lag {stats.get('lag')}, "
            f"partitions {stats.get('assigned')}"
        )

    def _log_stop(self) -> None:
        logger.info(
            "subscription %r stopped: %d events handled, %d filtered out, %d retries, "
            "%d dead-lettered",
            self.group,
            self._delivered,
            self._filtered,
            self._retries,
            self._dead,
        )

    def start(self) -> Subscription:
        """Run in a background thread (for tests, notebooks and servers with their own loop)."""
        if self._thread is not None:
            return self

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:
                self.error = exc
                logger.exception("%r failed", self)

        self._thread = threading.Thread(target=target, name=f"subscription-{self.group}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch (thread-safe, signal-safe)."""
        self.loop.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for a :meth:`start`-ed subscription to end; re-raise its error."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop, wait up to 60 s for the background thread, and leave the metrics."""
        self.stop()
        self.join(60.0)
        metrics.COLLECTOR.discard(self)

    def __enter__(self) -> Subscription:
        """The subscription itself; :meth:`start` it inside the block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """:meth:`close` (stop and wait)."""
        self.close()

    def _on_signal(self, signum: int) -> None:
        logger.info("%r: signal %s, stopping after the current batch", self, signum)
        self.stop()

    def _setup_projection(self, projection: PostgresProjection) -> None:
        with (
            pg.connect(self.settings.database_url) as conn,
            pg.translated(),
            conn.transaction(),
        ):
            projection.setup(conn)

    # -- handling ----------------------------------------------------------------------------

    def wants(self, event: RecordedEvent) -> bool:
        """Whether the category and type filters let ``event`` through."""
        if self.categories and event.category not in self.categories:
            return False
        return not self.event_types or event.type in self.event_types

    def _handle_batch(self, conn: psycopg.Connection, batches: Sequence[PartitionBatch]) -> None:
        wanted = [e for b in batches for e in b.events if self.wants(e)]
        hidden = lifecycle.hidden(conn, wanted)  # see "Deleted and truncated streams" above
        for batch in batches:
            messages = batch.messages or (None,) * len(batch.events)
            for event, message in zip(batch.events, messages, strict=True):
                if not self.wants(event):
                    self._filtered += 1
                    continue
                if (event.stream_id, event.version) in hidden:
                    self._hidden += 1
                    continue
                self._deliver(conn, event, message)

    def _deliver(
        self, conn: psycopg.Connection, event: RecordedEvent, message: Message | None
    ) -> None:
        delays = self.retry.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                if self.projection is not None:
                    # A savepoint: a failed attempt is rolled back alone, the batch goes on.
                    with conn.transaction():
                        self.projection.handle(conn, event)
                else:
                    self.handler(event)  # type: ignore[operator]
            except Exception as exc:
                if _is_outage(conn, exc):
                    # Not the event's fault: never dead-letter it; restart from the position.
                    raise
                if attempt >= self.retry.attempts:
                    self._give_up(event, message, exc, attempt)
                    return
                self._retries += 1
                delay = next(delays)
                logger.warning(
                    "%r: handler failed on %s v%s (%s/%s), attempt %s of %s, retrying in %.2fs: %s",
                    self,
                    event.stream_id,
                    event.version,
                    event.partition,
                    event.offset,
                    attempt,
                    self.retry.attempts,
                    delay,
                    exc,
                )
                self._sleep(delay)
            else:
                self._delivered += 1
                return

    def _give_up(
        self, event: RecordedEvent, message: Message | None, exc: Exception, attempts: int
    ) -> None:
        if self.dead_letters is None or message is None:
            raise exc
        logger.error(
            "%r: dead-lettering %s v%s (%s/%s) after %s attempts: %s",
            self,
            event.stream_id,
            event.version,
            event.partition,
            event.offset,
            attempts,
            exc,
        )
        self.dead_letters.send(message, exc, attempts)
        self._dead += 1

    def _sleep(self, seconds: float) -> None:
        # Ends early when stop() is called (or a signal arrives): the batch is then abandoned.
        if self.loop.stop_flag.wait(seconds):
            raise _Abandoned()

    # -- observability -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The loop's per-partition positions, lag and rates, plus handler outcomes."""
        stats = self.loop.stats()
        stats.update(
            delivered=self._delivered,
            filtered=self._filtered,
            hidden=self._hidden,
            retries=self._retries,
            dead_letters=self._dead,
            mode="exactly-once" if self.projection is not None else "at-least-once",
        )
        return stats
