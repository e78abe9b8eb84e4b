"""The index API (DESIGN.md section 7): per-stream, category and ``$all`` reads of ``events``.

Only the indexer writes ``events`` and it writes real events only, so nothing read here can be a
phantom. Consistency, as a reader sees it:

- An append is acknowledged when its PostgreSQL transaction commits; the indexer picks its
  events up from Kafka shortly after. ``stream_state().version`` (the writer's head) is current
  at once; event reads show what is indexed. ``min_version`` makes a stream read wait, bounded,
  until the index holds that version (read-your-writes); on time-out it answers with what is
  indexed and ``index_behind=True``.
- ``global_position`` is gap-free and handed out in commit order (see
  :mod:`indexer.projection`), so a reader paging ``$all`` or a category by ``next_position``
  never skips an event that commits later with a lower position.

:class:`Reads` is the synchronous flavour (a :class:`psycopg_pool.ConnectionPool`),
:class:`AsyncReads` the asyncio one; both share the statements and row conversion below.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal, Self

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from indexer import metrics
from indexer.notify import AsyncListener, Listener
from kafkastore import pg
from kafkastore.codec import decode_data
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, StreamDeleted, StreamNotFound
from kafkastore.records import PositionPage, RecordedEvent, StreamPage, StreamState
from kafkastore.streams import category_of, check_category, check_event_type, check_stream_id

Direction = Literal["forward", "backward"]

DEFAULT_WAIT = 5.0
"""How long a read with ``min_version`` and no timeout waits (capped by ``read_max_wait``)."""

_COLUMNS = """global_position, stream_id, version, event_id, event_type, data, content_type,
    metadata, created_at, partition, "offset", write_id, xid::text::bigint"""

# The stream's indexed head next to its writer-side head and visibility settings.
STREAM_HEAD = """
SELECT (SELECT max(version) FROM events WHERE stream_id = %(s)s),
       s.version, s.truncate_before, s.deleted, s.category, s.created_at, s.updated_at
FROM (SELECT 1) AS one LEFT JOIN streams s ON s.stream_id = %(s)s
"""
STREAM_FORWARD = f"""
SELECT {_COLUMNS} FROM events
WHERE stream_id = %s AND version >= %s ORDER BY version LIMIT %s
"""
STREAM_BACKWARD = f"""
SELECT {_COLUMNS} FROM events
WHERE stream_id = %s AND version <= %s AND version >= %s ORDER BY version DESC LIMIT %s
"""
CATEGORY = f"""
SELECT {_COLUMNS} FROM events
WHERE category = %s AND global_position >= %s ORDER BY global_position LIMIT %s
"""
CATEGORY_TYPES = f"""
SELECT {_COLUMNS} FROM events
WHERE category = %s AND global_position >= %s AND event_type = ANY(%s)
ORDER BY global_position LIMIT %s
"""
ALL = f"""
SELECT {_COLUMNS} FROM events WHERE global_position >= %s ORDER BY global_position LIMIT %s
"""
ALL_TYPES = f"""
SELECT {_COLUMNS} FROM events WHERE global_position >= %s AND event_type = ANY(%s)
ORDER BY global_position LIMIT %s
"""


def _recorded(row: Sequence[Any]) -> RecordedEvent:
    (position, stream_id, version, event_id, event_type, data, content_type, metadata,
     created_at, partition, offset, write_id, xid) = row  # fmt: skip
    raw = bytes(data)
    return RecordedEvent(
        id=event_id,
        stream_id=stream_id,
        version=version,
        type=event_type,
        data=decode_data(raw, content_type),
        raw=raw,
        metadata=metadata or {},
        created_at=created_at,
        partition=partition,
        offset=offset,
        content_type=content_type,
        global_position=position,
        write_id=write_id,
        xid=xid,
    )


class _Plan:
    """Validated arguments and the statements of one read (shared by both flavours)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def limit(self, limit: int | None) -> int:
        if limit is None:
            return self.settings.read_default_limit
        if not isinstance(limit, int) or not 1 <= limit <= self.settings.read_max_limit:
            raise InvalidRequest(
                f"limit must be 1-{self.settings.read_max_limit}", fields=["limit"]
            )
        return limit

    def timeout(self, timeout: float | None) -> float:
        wait = DEFAULT_WAIT if timeout is None else timeout
        if wait < 0:
            raise InvalidRequest("timeout must not be negative", fields=["timeout_ms"])
        return min(wait, self.settings.read_max_wait)

    @staticmethod
    def types(types: Sequence[str] | None) -> list[str] | None:
        if not types:
            return None
        return [check_event_type(t, field="type") for t in types]

    @staticmethod
    def position(value: int, field: str) -> int:
        if not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"{field} must be at least 1", fields=[field])
        return value

    @staticmethod
    def stream_args(
        stream_id: str, from_version: int | None, direction: str, min_version: int | None
    ) -> None:
        check_stream_id(stream_id)
        if direction not in ("forward", "backward"):
            raise InvalidRequest("direction must be forward or backward", fields=["direction"])
        if from_version is not None and (not isinstance(from_version, int) or from_version < 0):
            raise InvalidRequest("from_version must be at least 0", fields=["from_version"])
        if min_version is not None and (not isinstance(min_version, int) or min_version < 0):
            raise InvalidRequest("min_version must be at least 0", fields=["min_version"])

    @staticmethod
    def page_query(
        stream_id: str,
        head: Sequence[Any],
        from_version: int | None,
        direction: str,
        limit: int,
    ) -> tuple[str, tuple[Any, ...]] | None:
        """The page statement, or None when the page is empty without asking."""
        indexed, _version, truncate_before, _deleted = head[:4]
        lowest = max(1, truncate_before or 1)
        if direction == "forward":
            start = max(from_version or 1, lowest)
            return STREAM_FORWARD, (stream_id, start, limit + 1)
        top = indexed if from_version is None else min(from_version, indexed or 0)
        if not top or top < lowest:
            return None
        return STREAM_BACKWARD, (stream_id, top, lowest, limit + 1)

    @staticmethod
    def check_head(stream_id: str, head: Sequence[Any]) -> None:
        indexed, version, _truncate_before, deleted = head[:4]
        if deleted:
            raise StreamDeleted(stream_id)
        if not indexed and not version:
            raise StreamNotFound(stream_id)

    @staticmethod
    def stream_page(  # noqa: PLR0917 - private, called from two places
        stream_id: str,
        head: Sequence[Any],
        rows: Sequence[Sequence[Any]],
        direction: str,
        limit: int,
        behind: bool,
    ) -> StreamPage:
        events = tuple(_recorded(r) for r in rows[:limit])
        next_version = None
        if len(rows) > limit:
            next_version = int(rows[limit][2])
        return StreamPage(
            stream_id=stream_id,
            version=int(head[0] or 0),
            events=events,
            next_version=next_version,
            index_behind=behind,
        )

    @staticmethod
    def position_page(rows: Sequence[Sequence[Any]], from_position: int) -> PositionPage:
        events = tuple(_recorded(r) for r in rows)
        next_position = events[-1].global_position + 1 if events else from_position  # type: ignore[operator]
        return PositionPage(events=events, next_position=next_position)

    @staticmethod
    def state(stream_id: str, head: Sequence[Any]) -> StreamState:
        indexed, version, _tb, deleted, category, created_at, updated_at = head
        if not indexed and not version:
            raise StreamNotFound(stream_id)
        return StreamState(
            stream_id=stream_id,
            version=int(version if version is not None else indexed),
            indexed_version=int(indexed or 0),
            category=category or category_of(stream_id),
            created_at=created_at,
            updated_at=updated_at,
            deleted=bool(deleted),
        )


def _configure(conn: psycopg.Connection) -> None:
    set_json_loads(orjson.loads, conn)


async def _configure_async(conn: psycopg.AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)


def _categories_args(
    plan: _Plan, category: str, from_position: int, limit: int | None, types: Sequence[str] | None
) -> tuple[str, tuple[Any, ...], int]:
    check_category(category)
    start = plan.position(from_position, "from_position")
    n = plan.limit(limit)
    wanted = plan.types(types)
    if wanted:
        return CATEGORY_TYPES, (category, start, wanted, n), start
    return CATEGORY, (category, start, n), start


def _all_args(
    plan: _Plan, from_position: int, limit: int | None, types: Sequence[str] | None
) -> tuple[str, tuple[Any, ...], int]:
    start = plan.position(from_position, "from_position")
    n = plan.limit(limit)
    wanted = plan.types(types)
    if wanted:
        return ALL_TYPES, (start, wanted, n), start
    return ALL, (start, n), start


class Reads:
    """Synchronous reads over a connection pool. ``Reads.open(settings)``; ``close()``."""

    def __init__(self, settings: Settings, *, max_size: int = 10) -> None:
        self.settings = settings
        self._plan = _Plan(settings)
        self._pool = ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            name="kafkastore-reads",
        )
        self._listener = Listener(settings.database_url)
        self._opened = False
        self._closed = False

    @classmethod
    def open(cls, settings: Settings, *, max_size: int = 10) -> Self:
        reads = cls(settings, max_size=max_size)
        try:
            with pg.translated():
                reads._pool.open(wait=True, timeout=10.0)
        except BaseException:
            reads._pool.close()  # else its workers keep trying to connect
            raise
        reads._opened = True
        return reads

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener.close()
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        with pg.translated(), self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def _head(self, stream_id: str) -> tuple[Any, ...]:
        rows = self._fetch(STREAM_HEAD, {"s": stream_id})
        return rows[0]

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        limit: int | None = None,
        direction: Direction = "forward",
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> StreamPage:
        """One page of a stream (see the module docstring for ``min_version``)."""
        started = time.perf_counter()
        plan = self._plan
        plan.stream_args(stream_id, from_version, direction, min_version)
        n = plan.limit(limit)
        behind = False
        if min_version:
            self._listener.start()
            deadline = time.monotonic() + plan.timeout(timeout)
            while True:
                generation = self._listener.generation
                head = self._head(stream_id)
                if (head[0] or 0) >= min_version:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    behind = True
                    break
                metrics.READ_WAITS.inc()
                self._listener.wait(generation, remaining)
        else:
            head = self._head(stream_id)
        plan.check_head(stream_id, head)
        query = plan.page_query(stream_id, head, from_version, direction, n)
        rows = self._fetch(*query) if query else []
        page = plan.stream_page(stream_id, head, rows, direction, n, behind)
        metrics.READ_SECONDS.labels("stream").observe(time.perf_counter() - started)
        return page

    def read_category(
        self,
        category: str,
        *,
        from_position: int = 1,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> PositionPage:
        started = time.perf_counter()
        query, params, start = _categories_args(self._plan, category, from_position, limit, types)
        page = self._plan.position_page(self._fetch(query, params), start)
        metrics.READ_SECONDS.labels("category").observe(time.perf_counter() - started)
        return page

    def read_all(
        self,
        *,
        from_position: int = 1,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> PositionPage:
        started = time.perf_counter()
        query, params, start = _all_args(self._plan, from_position, limit, types)
        page = self._plan.position_page(self._fetch(query, params), start)
        metrics.READ_SECONDS.labels("all").observe(time.perf_counter() - started)
        return page

    def stream_state(self, stream_id: str) -> StreamState:
        check_stream_id(stream_id)
        return self._plan.state(stream_id, self._head(stream_id))


class AsyncReads:
    """Asyncio reads over a connection pool. ``await AsyncReads.open(settings)``; ``await close()``.

    The HTTP app opens one in its lifespan and keeps it in ``app.state.reads``.
    """

    def __init__(self, settings: Settings, *, max_size: int = 16) -> None:
        self.settings = settings
        self._plan = _Plan(settings)
        self._pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure_async,
            open=False,
            name="kafkastore-async-reads",
        )
        self._listener = AsyncListener(settings.database_url)
        self._closed = False

    @classmethod
    async def open(cls, settings: Settings, *, max_size: int = 16) -> Self:
        reads = cls(settings, max_size=max_size)
        try:
            with pg.translated():
                await reads._pool.open(wait=True, timeout=10.0)
        except BaseException:
            await reads._pool.close()  # else its workers keep trying to connect
            raise
        return reads

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._listener.close()
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _fetch(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        with pg.translated():
            async with self._pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()

    async def _head(self, stream_id: str) -> tuple[Any, ...]:
        rows = await self._fetch(STREAM_HEAD, {"s": stream_id})
        return rows[0]

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        limit: int | None = None,
        direction: Direction = "forward",
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> StreamPage:
        """One page of a stream (see the module docstring for ``min_version``)."""
        started = time.perf_counter()
        plan = self._plan
        plan.stream_args(stream_id, from_version, direction, min_version)
        n = plan.limit(limit)
        behind = False
        if min_version:
            await self._listener.start()
            deadline = time.monotonic() + plan.timeout(timeout)
            while True:
                generation = self._listener.generation
                head = await self._head(stream_id)
                if (head[0] or 0) >= min_version:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    behind = True
                    break
                metrics.READ_WAITS.inc()
                await self._listener.wait(generation, remaining)
        else:
            head = await self._head(stream_id)
        plan.check_head(stream_id, head)
        query = plan.page_query(stream_id, head, from_version, direction, n)
        rows = await self._fetch(*query) if query else []
        page = plan.stream_page(stream_id, head, rows, direction, n, behind)
        metrics.READ_SECONDS.labels("stream").observe(time.perf_counter() - started)
        return page

    async def read_category(
        self,
        category: str,
        *,
        from_position: int = 1,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> PositionPage:
        started = time.perf_counter()
        query, params, start = _categories_args(self._plan, category, from_position, limit, types)
        page = self._plan.position_page(await self._fetch(query, params), start)
        metrics.READ_SECONDS.labels("category").observe(time.perf_counter() - started)
        return page

    async def read_all(
        self,
        *,
        from_position: int = 1,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> PositionPage:
        started = time.perf_counter()
        query, params, start = _all_args(self._plan, from_position, limit, types)
        page = self._plan.position_page(await self._fetch(query, params), start)
        metrics.READ_SECONDS.labels("all").observe(time.perf_counter() - started)
        return page

    async def stream_state(self, stream_id: str) -> StreamState:
        check_stream_id(stream_id)
        return self._plan.state(stream_id, await self._head(stream_id))
