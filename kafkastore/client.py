"""The in-process client: ``EventStore`` and its asyncio twin ``AsyncEventStore``.

Appends go through the writer (group commit, the protocol of DESIGN.md section 2); reads come
from the PostgreSQL index (indexer.reads). Both objects have an explicit lifecycle: ``connect``
(or the constructor plus ``open()``, safe to call twice), ``close()`` (returns early when
closed), and context-manager use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from kafkastore.config import Settings
from kafkastore.errors import Unavailable
from kafkastore.records import (
    AppendRequest,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    PositionPage,
    StreamPage,
    StreamState,
)
from writer.engine import Writer
from writer.prepare import PreparedAppend, prepare, prepare_many

if TYPE_CHECKING:
    from indexer.reads import AsyncReads, Reads

Direction = Literal["forward", "backward"]


def _settings(
    settings: Settings | None,
    kafka: str | None,
    database: str | None,
    topic: str | None,
    overrides: dict[str, Any],
) -> Settings:
    base = settings or Settings.from_env()
    changes = {
        k: v
        for k, v in (("kafka", kafka), ("database_url", database), ("topic", topic))
        if v is not None
    }
    changes.update(overrides)
    return base.replace(**changes) if changes else base


class _Store:
    """What both flavours share: settings, the writer, the lifecycle flags, preparation."""

    _reads: Any

    def __init__(
        self,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = _settings(settings, None, None, None, overrides)
        self._writer = Writer(self.settings)
        self._reads = None
        self._closed = False

    @property
    def writer(self) -> Writer:
        return self._writer

    def _prepare_one(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> PreparedAppend:
        return prepare(
            AppendRequest(stream_id, tuple(events), expected_version), self.settings.limits
        )

    def _prepare_many(self, appends: Sequence[AppendRequest]) -> list[PreparedAppend]:
        return prepare_many(appends, self.settings.limits)


class EventStore(_Store):
    """Append to and read from the store, in-process (thread-safe; share one per process)."""

    _reads: Reads | None

    @classmethod
    def connect(
        cls,
        kafka: str | None = None,
        database: str | None = None,
        *,
        topic: str | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> EventStore:
        """Open a store; unset arguments come from ``KAFKASTORE_*`` variables."""
        store = cls(_settings(settings, kafka, database, topic, overrides))
        return store.open()

    def open(self) -> EventStore:
        self._writer.open()
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        if self._reads is not None:
            self._reads.close()

    def __enter__(self) -> EventStore:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = "any",
        *,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append events to one stream; raises WrongExpectedVersion, DuplicateEventId, ..."""
        prepared = self._prepare_one(stream_id, events, expected_version)
        future = self._writer.submit([prepared], atomic=False, wait=timeout)
        return future.result(self._result_timeout(timeout))[0]

    def append_many(
        self, appends: Sequence[AppendRequest], *, timeout: float | None = None
    ) -> list[AppendResult]:
        """Append to several streams atomically: all committed, or none."""
        future = self._writer.submit(self._prepare_many(appends), atomic=True, wait=timeout)
        return future.result(self._result_timeout(timeout))

    def _result_timeout(self, timeout: float | None) -> float:
        s = self.settings
        return (
            (timeout or s.backpressure_timeout)
            + s.idle_in_transaction_timeout
            + s.commit_resolve_timeout
        )

    # Reads (the index).
    def _reader(self) -> Reads:
        if self._reads is None:
            from indexer.reads import Reads

            self._reads = Reads.open(self.settings)
        return self._reads

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        limit: int = 100,
        direction: Direction = "forward",
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> StreamPage:
        return self._reader().read_stream(
            stream_id,
            from_version=from_version,
            limit=limit,
            direction=direction,
            min_version=min_version,
            timeout=timeout,
        )

    def read_category(
        self,
        category: str,
        *,
        from_position: int = 1,
        limit: int = 100,
        types: Sequence[str] | None = None,
    ) -> PositionPage:
        return self._reader().read_category(
            category, from_position=from_position, limit=limit, types=types
        )

    def read_all(
        self, *, from_position: int = 1, limit: int = 100, types: Sequence[str] | None = None
    ) -> PositionPage:
        return self._reader().read_all(from_position=from_position, limit=limit, types=types)

    def stream_state(self, stream_id: str) -> StreamState:
        return self._reader().stream_state(stream_id)


class AsyncEventStore(_Store):
    """The asyncio twin of :class:`EventStore` (same methods, awaitable)."""

    _reads: AsyncReads | None

    @classmethod
    async def connect(
        cls,
        kafka: str | None = None,
        database: str | None = None,
        *,
        topic: str | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> AsyncEventStore:
        store = cls(_settings(settings, kafka, database, topic, overrides))
        return await store.open()

    async def open(self) -> AsyncEventStore:
        await asyncio.to_thread(self._writer.open)
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._writer.close)
        if self._reads is not None:
            await self._reads.close()

    async def __aenter__(self) -> AsyncEventStore:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = "any",
    ) -> AppendResult:
        prepared = self._prepare_one(stream_id, events, expected_version)
        return (await self.submit([prepared], atomic=False))[0]

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[AppendResult]:
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

    async def _reader(self) -> AsyncReads:
        if self._reads is None:
            from indexer.reads import AsyncReads

            self._reads = await AsyncReads.open(self.settings)
        return self._reads

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        limit: int = 100,
        direction: Direction = "forward",
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> StreamPage:
        reads = await self._reader()
        return await reads.read_stream(
            stream_id,
            from_version=from_version,
            limit=limit,
            direction=direction,
            min_version=min_version,
            timeout=timeout,
        )

    async def read_category(
        self,
        category: str,
        *,
        from_position: int = 1,
        limit: int = 100,
        types: Sequence[str] | None = None,
    ) -> PositionPage:
        reads = await self._reader()
        return await reads.read_category(
            category, from_position=from_position, limit=limit, types=types
        )

    async def read_all(
        self, *, from_position: int = 1, limit: int = 100, types: Sequence[str] | None = None
    ) -> PositionPage:
        reads = await self._reader()
        return await reads.read_all(from_position=from_position, limit=limit, types=types)

    async def stream_state(self, stream_id: str) -> StreamState:
        reads = await self._reader()
        return await reads.stream_state(stream_id)
