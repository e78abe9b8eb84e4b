"""Faust (faust-streaming) adapter: Faust agents get the same verdict-filtered RecordedEvents.

Faust reads the events topic with its own consumer; this module decodes each message with the
kernel codec and judges it with the kernel's verdict rule before your agent sees it, so a Faust
agent never handles a phantom (docs/design.md section 2: only the indexer and the consumer
runtime may read the raw topic and call it the store - this is the consumer runtime's Faust face)::

    import faust
    from consumers.faust import broker_url, events_topic, recorded_events
    from kafkastore.config import Settings

    settings = Settings.from_env()                  # KAFKASTORE_KAFKA, _TOPIC, _DATABASE_URL
    app = faust.App("balances", broker=broker_url(settings), store="memory://")
    events = events_topic(app, settings)            # raw bytes, our topic

    @app.agent(events)
    async def balances(stream):
        async for event in recorded_events(stream, categories=["Account"]):
            ...                                     # event: kafkastore RecordedEvent

Delivery is Faust's: at-least-once, a message is acknowledged after the agent moved past it;
order is Faust's per-partition order, so a stream's events arrive in version order. Verdict
queries run on a psycopg connection in a worker thread (the resolver is synchronous); settled
write ids are cached, so a write's events cost one query. While a writer may still commit, the
agent waits on that message (never skips it). Events hidden by their stream's deletion or
retention are skipped, as by :class:`~consumers.subscription.Subscription` (one query per
delivered event, by the read rule of kafkastore.lifecycle).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import psycopg

from kafkastore import codec, lifecycle, pg
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent
from kafkastore.streams import check_category, check_event_type
from kafkastore.verdict import Verdict, VerdictResolver

logger = logging.getLogger("kafkastore.consumers")


def broker_url(settings: Settings | None = None) -> str:
    """Faust's ``broker`` for the configured Kafka: ``kafka://host:port`` per bootstrap server,
    ``;``-separated (``settings`` default: ``Settings.from_env()``)."""
    settings = settings or Settings.from_env()
    servers = [s.strip() for s in settings.kafka.split(",") if s.strip()]
    return ";".join(f"kafka://{server}" for server in servers)


def events_topic(app: Any, settings: Settings | None = None) -> Any:
    """The events topic as a Faust topic of raw bytes (our codec decodes, not Faust's)."""
    settings = settings or Settings.from_env()
    return app.topic(
        settings.topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


class _Message:
    """A Faust message seen through :class:`kafkastore.codec.KafkaMessage`."""

    __slots__ = ("_m",)

    def __init__(self, message: Any) -> None:
        self._m = message

    def key(self) -> bytes | None:
        key = self._m.key
        return key if key is None or isinstance(key, bytes) else bytes(key)

    def value(self) -> bytes | None:
        value = self._m.value
        return value if value is None or isinstance(value, bytes) else bytes(value)

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        headers = self._m.headers
        if headers is None:
            return None
        if isinstance(headers, Mapping):
            return list(headers.items())
        return list(headers)

    def partition(self) -> int | None:
        return int(self._m.partition)

    def offset(self) -> int | None:
        return int(self._m.offset)


class FaustVerdicts:
    """Decodes and judges Faust messages. One per agent; ``close()`` when done."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        categories: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        verdict_wait: float = 1.0,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.categories = frozenset(check_category(c) for c in categories or ())
        self.event_types = frozenset(check_event_type(t) for t in event_types or ())
        self.verdict_wait = verdict_wait
        self.phantoms = 0
        self.delivered = 0
        self._conn: psycopg.Connection | None = None
        self._resolver: VerdictResolver | None = None
        self._lock = asyncio.Lock()
        self.hidden = 0

    async def judge(self, message: Any) -> RecordedEvent | None:
        """The RecordedEvent of a Faust message, or None for a phantom or a filtered event."""
        try:
            wire = codec.decode(_Message(message))
        except codec.MalformedMessage as exc:
            logger.error(
                "faust: message %s/%s is not a kafkastore event: %s",
                message.partition,
                message.offset,
                exc,
            )
            self.phantoms += 1
            return None
        async with self._lock:
            real = await asyncio.to_thread(self._settle, wire)
        if not real:
            self.phantoms += 1
            return None
        event = wire.recorded()
        if self.categories and event.category not in self.categories:
            return None
        if self.event_types and event.type not in self.event_types:
            return None
        async with self._lock:
            gone = await asyncio.to_thread(self._hidden, event)
        if gone:
            self.hidden += 1
            return None
        self.delivered += 1
        return event

    def _hidden(self, event: RecordedEvent) -> bool:
        assert self._conn is not None  # opened by _settle
        return bool(lifecycle.hidden(self._conn, [event]))

    def _settle(self, wire: codec.WireEvent) -> bool:
        if self._conn is None or self._conn.closed:
            self._conn = pg.connect(self.settings.database_url, autocommit=True)
            self._resolver = VerdictResolver(pg.system_identifier(self._conn))
        assert self._resolver is not None
        while True:
            (judgement,) = self._resolver.judge_until_settled(
                self._conn, [wire], timeout=self.verdict_wait
            )
            if judgement.verdict is not Verdict.PENDING:
                return judgement.verdict is Verdict.REAL
            logger.info("faust: waiting for the writer of %s/%s", wire.partition, wire.offset)

    async def events(self, stream: Any) -> AsyncIterator[RecordedEvent]:
        """Real (and wanted) events of a Faust stream of raw messages, in stream order."""
        async for item in stream.events():
            event = await self.judge(item.message)
            if event is not None:
                yield event

    def close(self) -> None:
        """Close the verdict connection (a later :meth:`judge` opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def recorded_events(
    stream: Any,
    *,
    settings: Settings | None = None,
    categories: Iterable[str] | None = None,
    event_types: Iterable[str] | None = None,
) -> AsyncIterator[RecordedEvent]:
    """``async for event in recorded_events(stream)`` inside a Faust agent."""
    verdicts = FaustVerdicts(settings, categories=categories, event_types=event_types)
    try:
        async for event in verdicts.events(stream):
            yield event
    finally:
        verdicts.close()
