"""What a read does, free of I/O (docs/design.md section 7): per-stream, category and ``$all``
reads.

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

After psycopg's own sans-I/O generators, every read is a generator method of
:class:`ReadSteps`: it validates, waits, pages and builds the result, and *yields* each piece of
I/O it needs as a small value (:class:`Fetch` rows, :data:`LISTEN`, :class:`Wait` for a
notification), to be sent back its result. :mod:`indexer.reads` does that I/O, blocking or
awaited.

Why this module is longer than ~400 lines: every read's SQL (with the visibility rule of
the stream lifecycle) sits beside the step that pages it, so each statement can be checked
against its paging in one file; split, the two would drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from indexer import metrics
from kafkastore.codec import decode_data
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, SnapshotNotFound, StreamDeleted, StreamNotFound
from kafkastore.records import (
    LoadedStream,
    PositionPage,
    RecordedEvent,
    Snapshot,
    StreamMetadata,
    StreamPage,
    StreamState,
)
from kafkastore.streams import (
    MAX_POSITION,
    category_of,
    check_category,
    check_event_type,
    check_stream_id,
)

Direction = Literal["forward", "backward"]

DEFAULT_WAIT = 5.0
"""How long a read with ``min_version`` and no timeout waits (capped by ``read_max_wait``)."""

_COLUMNS = """e.global_position, e.stream_id, e.version, e.event_id, e.event_type, e.data,
    e.content_type, e.metadata, e.created_at, e.partition, e."offset", e.write_id,
    e.xid::text::bigint"""

# Retention and deletion (docs/http.md "Stream lifecycle") are applied here, in SQL, by the one rule
# of migration 0004: every read statement joins the event's head row and keeps what
# kafkastore_visible lets through. Hidden events leave holes in positions and versions; the
# pages skip them and next_version / next_position stay right.
_EVENTS = "events e LEFT JOIN streams s ON s.stream_id = e.stream_id"
_VISIBLE = """kafkastore_visible(e.version, e.created_at, s.version, s.truncate_before,
    s.max_count, s.max_age, s.deleted)"""

# The stream's indexed head (what the scavenger removed counts as indexed) next to its
# writer-side head, its lifecycle state and the lowest version readable now.
STREAM_HEAD = f"""
SELECT greatest((SELECT max(version) FROM events WHERE stream_id = %(s)s),
                (SELECT below_version - 1 FROM scavenged WHERE stream_id = %(s)s)),
       s.version, s.truncate_before, s.deleted, s.category, s.created_at, s.updated_at,
       s.soft_deleted,
       (SELECT min(e.version) FROM events e WHERE e.stream_id = %(s)s AND {_VISIBLE})
FROM (SELECT 1) AS one LEFT JOIN streams s ON s.stream_id = %(s)s
"""
STREAM_FORWARD = f"""
SELECT {_COLUMNS} FROM {_EVENTS}
WHERE e.stream_id = %s AND e.version >= %s AND {_VISIBLE} ORDER BY e.version LIMIT %s
"""
STREAM_BACKWARD = f"""
SELECT {_COLUMNS} FROM {_EVENTS}
WHERE e.stream_id = %s AND e.version <= %s AND {_VISIBLE} ORDER BY e.version DESC LIMIT %s
"""
# Position reads. Each returns at least one row: the index's head (the highest global position,
# read in the same snapshot as the page) and then the page's columns, NULL when nothing matched.
# Positions are handed out gap-free in commit order, so every position up to that head was
# visible to the page's scan (hidden events are dropped by the filter, not skipped by the scan):
# a page shorter than its limit has scanned up to the head.
_POSITION_PAGE = """
SELECT h.head, e.* FROM (SELECT coalesce(max(global_position), 0) AS head FROM events) AS h
LEFT JOIN LATERAL ({page}) AS e ON true
"""
CATEGORY = _POSITION_PAGE.format(
    page=f"""SELECT {_COLUMNS} FROM {_EVENTS}
    WHERE e.category = %s AND e.global_position >= %s AND {_VISIBLE}
    ORDER BY e.global_position LIMIT %s"""
)
CATEGORY_TYPES = _POSITION_PAGE.format(
    page=f"""SELECT {_COLUMNS} FROM {_EVENTS}
    WHERE e.category = %s AND e.global_position >= %s AND e.event_type = ANY(%s) AND {_VISIBLE}
    ORDER BY e.global_position LIMIT %s"""
)
ALL = _POSITION_PAGE.format(
    page=f"""SELECT {_COLUMNS} FROM {_EVENTS} WHERE e.global_position >= %s AND {_VISIBLE}
    ORDER BY e.global_position LIMIT %s"""
)
ALL_TYPES = _POSITION_PAGE.format(
    page=f"""SELECT {_COLUMNS} FROM {_EVENTS}
    WHERE e.global_position >= %s AND e.event_type = ANY(%s) AND {_VISIBLE}
    ORDER BY e.global_position LIMIT %s"""
)
METADATA = """
SELECT metadata_version, max_count, max_age, truncate_before, metadata, deleted
FROM streams WHERE stream_id = %s
"""
# The newest snapshot next to the tombstone flag (one row even when there is neither).
LATEST_SNAPSHOT = """
SELECT s.deleted, n.version, n.type, n.data, n.content_type, n.created_at
FROM (SELECT 1) AS one
LEFT JOIN streams s ON s.stream_id = %(s)s
LEFT JOIN LATERAL (
    SELECT version, type, data, content_type, created_at FROM snapshots
    WHERE stream_id = %(s)s ORDER BY version DESC LIMIT 1
) AS n ON true
"""


# The I/O a read asks for. Each flavour's ``_do`` performs one and returns its result.
@dataclass(frozen=True, slots=True)
class Fetch:
    """Run ``query`` on a pooled connection; the read is sent all its rows."""

    query: str
    params: Any


@dataclass(frozen=True, slots=True)
class Listen:
    """Start the notification listener (idempotent); the read is sent its generation."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait until the listener's generation moves past ``generation`` or ``timeout`` passes;
    the read is sent the generation then."""

    generation: int
    timeout: float


LISTEN = Listen()
Op = Fetch | Listen | Wait
T = TypeVar("T")
Steps = Generator[Op, Any, T]
"""A read as a generator: yields each :data:`Op`, is sent its result, returns the answer."""


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


def _position_page(rows: Sequence[Sequence[Any]], from_position: int, limit: int) -> PositionPage:
    """The page of a position read (rows: the head, then an event's columns or NULLs).

    ``next_position`` follows the last event of a full page; after a shorter page (filters
    matched fewer events than ``limit``, or none) the scan reached the head, so it is the
    position after the head: a filtered tail moves past events it does not want.
    """
    head = int(rows[0][0]) if rows else 0
    events = tuple(_recorded(r[1:]) for r in rows if r[1] is not None)
    if len(events) >= limit:
        next_position = events[-1].global_position + 1  # type: ignore[operator]
    else:
        next_position = max(from_position, head + 1)
    return PositionPage(events=events, next_position=next_position)


def _check_head(stream_id: str, head: Sequence[Any]) -> None:
    indexed, version, _truncate_before, deleted = head[:4]
    if deleted:
        raise StreamDeleted(stream_id)
    if head[7] or (not indexed and not version):  # soft-deleted and not recreated, or absent
        raise StreamNotFound(stream_id)


def _page_query(
    stream_id: str, head: Sequence[Any], from_version: int | None, direction: str, limit: int
) -> Fetch | None:
    """The page statement (one row more than ``limit``, to learn the next page), or None when
    the page is empty without asking. Hidden events are skipped by the statement itself."""
    indexed = head[0]
    if direction == "forward":
        return Fetch(STREAM_FORWARD, (stream_id, from_version or 1, limit + 1))
    top = indexed if from_version is None else min(from_version, indexed or 0)
    if not top:
        return None
    return Fetch(STREAM_BACKWARD, (stream_id, top, limit + 1))


def _head(stream_id: str) -> Steps[tuple[Any, ...]]:
    rows = yield Fetch(STREAM_HEAD, {"s": stream_id})
    head: tuple[Any, ...] = rows[0]
    return head


class ReadSteps:
    """The reads, free of I/O: argument checks, the ``min_version`` wait, paging, results."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        limit: int | None = None,
        direction: Direction = "forward",
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> Steps[StreamPage]:
        """One page of a stream: at most ``limit`` events (default ``read_default_limit``) in
        version order from ``from_version`` (forward: default the first event; ``backward``:
        down from it, default the head); ``next_version`` is where the next page starts.

        With ``min_version``, first wait up to ``timeout`` seconds (default 5, capped by
        ``read_max_wait``) until the index holds that version, woken by the indexer's NOTIFY;
        on time-out the page holds what is indexed and ``index_behind`` is True. Raises
        StreamNotFound, StreamDeleted or InvalidRequest.
        """
        started = time.perf_counter()
        self._check_stream_args(stream_id, from_version, direction, min_version)
        n = self._limit(limit)
        behind = False
        if min_version:
            # notify.py explains why no wake-up is lost: the generation is taken before each
            # check of the index, and any commit after it moves the generation on.
            generation = yield LISTEN
            deadline = time.monotonic() + self._timeout(timeout)
            while True:
                head = yield from _head(stream_id)
                if (head[0] or 0) >= min_version:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    behind = True
                    break
                metrics.READ_WAITS.inc()
                generation = yield Wait(generation, remaining)
        else:
            head = yield from _head(stream_id)
        _check_head(stream_id, head)
        query = _page_query(stream_id, head, from_version, direction, n)
        rows = (yield query) if query else []
        page = StreamPage(
            stream_id=stream_id,
            version=int(head[0] or 0),
            events=tuple(_recorded(r) for r in rows[:n]),
            next_version=int(rows[n][2]) if len(rows) > n else None,
            index_behind=behind,
        )
        metrics.READ_SECONDS.labels("stream").observe(time.perf_counter() - started)
        return page

    def read_category(
        self,
        category: str,
        *,
        from_position: int = 1,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> Steps[PositionPage]:
        """Events of every stream of ``category`` in global-position order from
        ``from_position``, at most ``limit``; ``types`` keeps only those event types.
        ``next_position`` is where the next page starts."""
        started = time.perf_counter()
        check_category(category)
        start, n, wanted = self._page_args(from_position, limit, types)
        if wanted:
            rows = yield Fetch(CATEGORY_TYPES, (category, start, wanted, n))
        else:
            rows = yield Fetch(CATEGORY, (category, start, n))
        page = _position_page(rows, start, n)
        metrics.READ_SECONDS.labels("category").observe(time.perf_counter() - started)
        return page

    def read_all(
        self,
        *,
        from_position: int = 1,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> Steps[PositionPage]:
        """Every event (``$all``) in global-position order from ``from_position``, at most
        ``limit``; ``types`` keeps only those event types."""
        started = time.perf_counter()
        start, n, wanted = self._page_args(from_position, limit, types)
        if wanted:
            rows = yield Fetch(ALL_TYPES, (start, wanted, n))
        else:
            rows = yield Fetch(ALL, (start, n))
        page = _position_page(rows, start, n)
        metrics.READ_SECONDS.labels("all").observe(time.perf_counter() - started)
        return page

    def stream_state(self, stream_id: str) -> Steps[StreamState]:
        """The stream's writer-side head (current as soon as an append is acknowledged), its
        indexed version, category, timestamps and ``readable_from`` (the lowest version a
        read returns now). Raises StreamNotFound (also for a soft-deleted stream); a
        tombstoned stream answers with ``deleted=True``."""
        check_stream_id(stream_id)
        head = yield from _head(stream_id)
        indexed, version, _tb, deleted, category, created_at, updated_at, soft, lowest = head
        if (soft and not deleted) or (not indexed and not version):
            raise StreamNotFound(stream_id)
        return StreamState(
            stream_id=stream_id,
            version=int(version if version is not None else indexed),
            indexed_version=int(indexed or 0),
            category=category or category_of(stream_id),
            created_at=created_at,
            updated_at=updated_at,
            deleted=bool(deleted),
            readable_from=None if deleted or lowest is None else int(lowest),
        )

    def get_metadata(self, stream_id: str) -> Steps[StreamMetadata]:
        """The stream's metadata (``metadata_version`` 0 and no fields when never set, also for
        a stream without events). Raises StreamDeleted for a tombstoned stream."""
        check_stream_id(stream_id)
        rows = yield Fetch(METADATA, (stream_id,))
        if not rows:
            return StreamMetadata(stream_id=stream_id, metadata_version=0)
        version, max_count, max_age, truncate_before, extra, deleted = rows[0]
        if deleted:
            raise StreamDeleted(stream_id)
        extra = extra or {}
        return StreamMetadata(
            stream_id=stream_id,
            metadata_version=int(version),
            max_count=max_count,
            max_age=max_age,
            truncate_before=truncate_before,
            acl=extra.get("acl"),
            custom=extra.get("custom"),
        )

    def latest_snapshot(self, stream_id: str) -> Steps[Snapshot]:
        """The stream's snapshot of the highest version (served even when that version was
        truncated away). Raises SnapshotNotFound, or StreamDeleted for a tombstoned stream."""
        check_stream_id(stream_id)
        rows = yield Fetch(LATEST_SNAPSHOT, {"s": stream_id})
        deleted, version, kind, data, content_type, created_at = rows[0]
        if deleted:
            raise StreamDeleted(stream_id)
        if version is None:
            raise SnapshotNotFound(stream_id)
        raw = bytes(data)
        return Snapshot(
            stream_id, int(version), kind, decode_data(raw, content_type), created_at, content_type
        )

    def load(self, stream_id: str) -> Steps[LoadedStream]:
        """The latest snapshot (or None) and every readable event after it, in version order.
        Raises StreamNotFound when the stream has neither events nor a snapshot."""
        try:
            snapshot: Snapshot | None = yield from self.latest_snapshot(stream_id)
        except SnapshotNotFound:
            snapshot = None
        events: list[RecordedEvent] = []
        start = snapshot.version + 1 if snapshot else 1
        version = snapshot.version if snapshot else 0
        try:
            while True:
                page = yield from self.read_stream(
                    stream_id, from_version=start, limit=self.settings.read_max_limit
                )
                events.extend(page.events)
                version = max(version, page.version)
                if page.next_version is None:
                    break
                start = page.next_version
        except StreamNotFound:
            if snapshot is None:
                raise
        return LoadedStream(stream_id, snapshot, tuple(events), version)

    # Argument checks.
    def _limit(self, limit: int | None) -> int:
        if limit is None:
            return self.settings.read_default_limit
        if not isinstance(limit, int) or not 1 <= limit <= self.settings.read_max_limit:
            raise InvalidRequest(
                f"limit must be 1-{self.settings.read_max_limit}", fields=["limit"]
            )
        return limit

    def _timeout(self, timeout: float | None) -> float:
        wait = DEFAULT_WAIT if timeout is None else timeout
        if wait < 0:
            raise InvalidRequest("timeout must not be negative", fields=["timeout_ms"])
        return min(wait, self.settings.read_max_wait)

    def _page_args(
        self, from_position: int, limit: int | None, types: Sequence[str] | None
    ) -> tuple[int, int, list[str] | None]:
        if not isinstance(from_position, int) or not 1 <= from_position <= MAX_POSITION:
            raise InvalidRequest(
                f"from_position must be 1-{MAX_POSITION}", fields=["from_position"]
            )
        wanted = [check_event_type(t, field="type") for t in types] if types else None
        return from_position, self._limit(limit), wanted

    @staticmethod
    def _check_stream_args(
        stream_id: str, from_version: int | None, direction: str, min_version: int | None
    ) -> None:
        check_stream_id(stream_id)
        if direction not in ("forward", "backward"):
            raise InvalidRequest("direction must be forward or backward", fields=["direction"])
        for name, value in (("from_version", from_version), ("min_version", min_version)):
            if value is not None and (not isinstance(value, int) or not 0 <= value <= MAX_POSITION):
                raise InvalidRequest(f"{name} must be 0-{MAX_POSITION}", fields=[name])
