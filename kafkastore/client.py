"""The in-process client: ``EventStore`` and its asyncio twin ``AsyncEventStore``.

Appends go through the writer (group commit, the protocol of docs/design.md section 2); reads come
from the PostgreSQL index (indexer.reads). Both objects have an explicit lifecycle: ``connect``
(or the constructor plus ``open()``, safe to call twice), ``close()`` (returns early when
closed), and context-manager use::

    with EventStore.connect() as store: ...
    async with AsyncEventStore.connect() as store: ...    # or: store = await ....connect()

One implementation: what the flavours share (settings, preparation, ``connect``) is in
``_Store``; their read methods are the very generators of :class:`indexer.reads.ReadSteps`,
turned into methods by ``blocking`` / ``awaiting`` as in :mod:`indexer.reads`. What is left in
each flavour is its I/O: blocking calls, or awaits that keep the event loop free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator, Sequence
from typing import Any, Generic, TypeVar

from indexer.read_steps import Op, ReadSteps
from indexer.reads import AsyncReads, Reads, awaiting, blocking
from kafkastore.config import Settings
from kafkastore.errors import Unavailable
from kafkastore.lifecycle import MetadataUpdate, MetadataVersion, parse_metadata
from kafkastore.records import (
    AppendRequest,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    Snapshot,
    StreamMetadata,
)
from kafkastore.streams import check_stream_id
from kafkastore.target import resolve
from writer import lifecycle
from writer.decide import Deletion
from writer.engine import Writer
from writer.prepare import PreparedAppend, parse_expected, prepare, prepare_many

Opened = TypeVar("Opened")

logger = logging.getLogger("kafkastore")


def _settings(
    settings: Settings | None,
    kafka: str | None,
    database: str | None,
    topic: str | None,
    overrides: dict[str, Any],
) -> Settings:
    changes = {
        k: v
        for k, v in (("kafka", kafka), ("database_url", database), ("topic", topic))
        if v is not None
    }
    changes.update(overrides)
    if settings is not None:
        return settings.replace(**changes) if changes else settings
    # Arguments > KAFKASTORE_* > the running dev stack of this checkout > defaults.
    target = resolve(changes, flag_names={"kafka": "kafka=", "database_url": "database="})
    if line := target.describe():
        logger.info("EventStore.connect(): %s", line)
    return target.settings


class _Store(Generic[Opened]):
    """What both flavours share: settings, the writer, preparation, ``connect``."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = _settings(settings, None, None, None, overrides)
        self._writer = Writer(self.settings)
        self._steps = ReadSteps(self.settings)

    @classmethod
    def connect(
        cls,
        kafka: str | None = None,
        database: str | None = None,
        *,
        topic: str | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> Opened:
        """Open a store. Without ``settings``, each unset argument comes from its
        ``KAFKASTORE_*`` variable, else from the running dev stack of the checkout this runs
        in (``.kafkastore/dev.json``, :mod:`kafkastore.target`), else the default;
        ``overrides`` replace single settings (``linger_ms=2``)."""
        return cls(_settings(settings, kafka, database, topic, overrides))._connected()

    def _connected(self) -> Opened:
        raise NotImplementedError

    @property
    def writer(self) -> Writer:
        """The append engine (group commit) of this store."""
        return self._writer

    def _prepare_one(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> PreparedAppend:
        return prepare(
            AppendRequest(stream_id, tuple(events), expected_version), self.settings.limits
        )

    def _prepare_many(self, appends: Sequence[AppendRequest]) -> list[PreparedAppend]:
        return prepare_many(appends, self.settings.limits)

    @staticmethod
    def _metadata(
        expected_metadata_version: MetadataVersion, fields: dict[str, Any]
    ) -> MetadataUpdate:
        return parse_metadata({"expected_metadata_version": expected_metadata_version, **fields})

    @staticmethod
    def _deletion(stream_id: str, expected_version: ExpectedVersion, hard: bool) -> Deletion:
        return Deletion(check_stream_id(stream_id), parse_expected(expected_version), hard)


class EventStore(_Store["EventStore"]):
    """Append to and read from the store, in-process (thread-safe; share one per process)."""

    _reads: Reads | None = None

    def _connected(self) -> EventStore:
        return self.open()

    def open(self) -> EventStore:
        """Start the writer (safe to call twice); the read pool opens at the first read."""
        self._writer.open()
        return self

    def close(self) -> None:
        """Stop the writer (queued appends are answered first) and the reads; safe to call
        twice."""
        self._writer.close()
        if self._reads is not None:
            self._reads.close()

    def __enter__(self) -> EventStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = "any",
        *,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append events to one stream; raises WrongExpectedVersion, DuplicateEventId, ...

        ``timeout`` bounds the wait for room in a full writer (default
        ``backpressure_timeout``, then Unavailable).
        """
        prepared = self._prepare_one(stream_id, events, expected_version)
        future = self._writer.submit([prepared], atomic=False, wait=timeout)
        return future.result(self._result_timeout(timeout))[0]

    def append_many(
        self, appends: Sequence[AppendRequest], *, timeout: float | None = None
    ) -> list[AppendResult]:
        """Append to several streams atomically: all committed, or none (AppendConflicts
        lists every append that failed its check)."""
        future = self._writer.submit(self._prepare_many(appends), atomic=True, wait=timeout)
        return future.result(self._result_timeout(timeout))

    def _result_timeout(self, timeout: float | None) -> float:
        s = self.settings
        return (
            (timeout or s.backpressure_timeout)
            + s.idle_in_transaction_timeout
            + s.commit_resolve_timeout
        )

    def set_metadata(
        self,
        stream_id: str,
        *,
        expected_metadata_version: MetadataVersion = "any",
        **fields: Any,
    ) -> StreamMetadata:
        """Replace the stream's metadata (``max_count``, ``max_age``, ``truncate_before``,
        ``acl``, ``custom``; absent ones are unset); also before the stream has events.
        Raises WrongMetadataVersion, StreamDeleted or InvalidRequest, changing nothing."""
        update = self._metadata(expected_metadata_version, fields)
        return lifecycle.set_metadata(self.settings, stream_id, update)

    def delete_stream(
        self, stream_id: str, *, expected_version: ExpectedVersion = "any", hard: bool = False
    ) -> None:
        """Soft-delete the stream (its events leave every read; appending again recreates it,
        numbering continues), or with ``hard=True`` tombstone it for good."""
        deletion = self._deletion(stream_id, expected_version, hard)
        self._writer.submit_deletion(deletion).result(self._result_timeout(None))

    def save_snapshot(
        self,
        stream_id: str,
        version: int,
        type: str,
        data: Any,
        *,
        content_type: str | None = None,
    ) -> Snapshot:
        """Store a snapshot of the stream's state at ``version`` (at most its head, else
        SnapshotAboveHead)."""
        return lifecycle.save_snapshot(
            self.settings, stream_id, version, type, data, content_type=content_type
        )

    def _do(self, op: Op) -> Any:
        if self._reads is None:
            self._reads = Reads.open(self.settings)
        return self._reads._do(op)

    read_stream = blocking(ReadSteps.read_stream)
    read_category = blocking(ReadSteps.read_category)
    read_all = blocking(ReadSteps.read_all)
    stream_state = blocking(ReadSteps.stream_state)
    get_metadata = blocking(ReadSteps.get_metadata)
    latest_snapshot = blocking(ReadSteps.latest_snapshot)
    load = blocking(ReadSteps.load)


class AsyncEventStore(_Store["_Connecting"]):
    """The asyncio twin of :class:`EventStore` (same methods, awaitable)."""

    _reads: AsyncReads | None = None

    def _connected(self) -> _Connecting:
        return _Connecting(self)

    async def open(self) -> AsyncEventStore:
        """Start the writer off the event loop (safe to call twice); the read pool opens at
        the first read."""
        await asyncio.to_thread(self._writer.open)
        return self

    async def close(self) -> None:
        """Stop the writer (queued appends are answered first) and the reads; safe to call
        twice."""
        await asyncio.to_thread(self._writer.close)
        if self._reads is not None:
            await self._reads.close()

    async def __aenter__(self) -> AsyncEventStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = "any",
    ) -> AppendResult:
        """Append events to one stream; raises WrongExpectedVersion, DuplicateEventId, ..."""
        prepared = self._prepare_one(stream_id, events, expected_version)
        return (await self.submit([prepared], atomic=False))[0]

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append to several streams atomically: all committed, or none (AppendConflicts
        lists every append that failed its check)."""
        return await self.submit(self._prepare_many(appends), atomic=True)

    async def submit(
        self, prepared: Sequence[PreparedAppend], *, atomic: bool
    ) -> list[AppendResult]:
        """Queue prepared appends; when the writer is full, wait for room off the event loop
        (up to ``backpressure_timeout``, then Unavailable)."""
        try:
            future = self._writer.submit(prepared, atomic=atomic, wait=0.0)
        except Unavailable:
            future = await asyncio.to_thread(self._writer.submit, prepared, atomic=atomic)
        return await asyncio.wrap_future(future)

    async def set_metadata(
        self,
        stream_id: str,
        *,
        expected_metadata_version: MetadataVersion = "any",
        **fields: Any,
    ) -> StreamMetadata:
        """See :meth:`EventStore.set_metadata`."""
        update = self._metadata(expected_metadata_version, fields)
        return await asyncio.to_thread(lifecycle.set_metadata, self.settings, stream_id, update)

    async def delete_stream(
        self, stream_id: str, *, expected_version: ExpectedVersion = "any", hard: bool = False
    ) -> None:
        """See :meth:`EventStore.delete_stream`."""
        deletion = self._deletion(stream_id, expected_version, hard)
        await asyncio.wrap_future(self._writer.submit_deletion(deletion))

    async def save_snapshot(
        self,
        stream_id: str,
        version: int,
        type: str,
        data: Any,
        *,
        content_type: str | None = None,
    ) -> Snapshot:
        """See :meth:`EventStore.save_snapshot`."""
        return await asyncio.to_thread(
            lifecycle.save_snapshot,
            self.settings,
            stream_id,
            version,
            type,
            data,
            content_type=content_type,
        )

    async def _do(self, op: Op) -> Any:
        if self._reads is None:
            self._reads = await AsyncReads.open(self.settings)
        return await self._reads._do(op)

    read_stream = awaiting(ReadSteps.read_stream)
    read_category = awaiting(ReadSteps.read_category)
    read_all = awaiting(ReadSteps.read_all)
    stream_state = awaiting(ReadSteps.stream_state)
    get_metadata = awaiting(ReadSteps.get_metadata)
    latest_snapshot = awaiting(ReadSteps.latest_snapshot)
    load = awaiting(ReadSteps.load)


class _Connecting:
    """What :meth:`AsyncEventStore.connect` returns: ``await`` it for the open store, or use
    it in ``async with`` (opens, then closes at the end)."""

    def __init__(self, store: AsyncEventStore) -> None:
        self._store = store

    def __await__(self) -> Generator[Any, None, AsyncEventStore]:
        return self._store.open().__await__()

    async def __aenter__(self) -> AsyncEventStore:
        return await self._store.open()

    async def __aexit__(self, *exc: object) -> None:
        await self._store.close()
