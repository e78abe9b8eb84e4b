"""The apply step of the indexer: one transaction's batches -> rows of ``events``
(docs/design.md section 6).

:func:`apply` runs inside the consumer runtime's transaction, after the runtime has locked and
checked the partitions' ``index_checkpoints`` rows and before it advances them and commits. So
the rows written here and the offsets stored there commit together: exactly once.

What it does, per transaction:

1. Drop exact duplicates inside the batch; two different events at one ``(stream_id, version)``
   is an :class:`~kafkastore.errors.IntegrityError` (the ``appends`` unique index makes that
   impossible for real events, so it means the store disagrees with itself).
2. One probe per stream of the batch finds the streams whose versions are already indexed (a
   re-delivery after checkpoints were reset, or two topics indexed into one database by mistake).
   Exact duplicates ``(stream_id, version, event_id)`` are absorbed (already indexed); anything
   else raises IntegrityError, which rolls the transaction back: loud, never silent.
3. Lock ``index_head`` (``SELECT ... FOR UPDATE``, in the round trip of step 2's probe: both are
   queued by :func:`begin` in the runtime's round trip of the checkpoint locks), give
   the new rows ``last_position + 1 .. last_position + n`` in batch order and COPY them into
   ``events``.
   The row lock is held until COMMIT, so every indexer instance hands out positions in commit
   order without gaps: a reader that sees position p committed has already been able to see
   every position below p (the holder of p-1 committed before the holder of p got the lock).
   A transaction without real events never takes the lock, so phantom-only batches do not
   serialise the instances.
Before step 3, events that no read may show now are dropped (kafkastore.lifecycle.HIDDEN: the
stream's retention and deletion, decided in SQL by the rule every read uses, and the versions
the scavenger removed for good; asked only for the streams step 2's probe flags as having such
rules or removed versions, so a batch of plain streams costs no per-event query): an indexer
that re-reads old offsets never brings a scavenged or deleted event back. They get no global
position (holes in positions are allowed; docs/http.md).

4. Record phantoms in ``phantoms`` (for the audit) and ``NOTIFY kafkastore_index`` with the new
   high-water mark and the streams indexed (:func:`advance_head`, pipelined with the checkpoints
   and COMMIT; the payload is :func:`indexer.wakeups.payload`); PostgreSQL delivers
   notifications only at COMMIT, in commit order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from consumers.runtime import PhantomRecord
from indexer import wakeups
from kafkastore import lifecycle, pg
from kafkastore.codec import WireEvent
from kafkastore.errors import IntegrityError
from kafkastore.streams import category_of

logger = logging.getLogger("kafkastore.indexer")

NOTIFY_CHANNEL = "kafkastore_index"
"""Payload: the new ``index_head.last_position`` (decimal), then the streams or categories the
commit touched (:mod:`indexer.wakeups`)."""


class BatchLike(Protocol):
    """What the apply step reads of the runtime's :class:`~consumers.runtime.PartitionBatch`."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def wire(self) -> Sequence[WireEvent]: ...
    @property
    def phantoms(self) -> Sequence[PhantomRecord]: ...


@dataclass(frozen=True, slots=True)
class Applied:
    """What one :func:`apply` call wrote."""

    indexed: int
    """New rows in ``events``."""
    duplicates: int
    """Real events absorbed because they were already indexed."""
    phantoms: int
    """Phantom records stored."""
    last_position: int | None
    """The new high-water mark, or None when no row was written."""
    streams: tuple[str, ...] = ()
    """The stream of each row written, for the notification (:func:`indexer.wakeups.payload`
    names each once)."""


# Per stream of the batch: its highest indexed version (a backward scan of the unique index),
# and whether anything may hide some of its events - lifecycle metadata or a tombstone (the
# predicate of the streams_lifecycle index) or versions the scavenger removed. Only the events
# of those streams are checked one by one (lifecycle.HIDDEN); most batches have none.
INDEXED_HEADS = """
SELECT s, (SELECT max(version) FROM events e WHERE e.stream_id = s),
       EXISTS (SELECT 1 FROM streams t
               WHERE t.stream_id = s AND (t.deleted OR t.truncate_before IS NOT NULL
                                          OR t.max_count IS NOT NULL OR t.max_age IS NOT NULL))
       OR EXISTS (SELECT 1 FROM scavenged g WHERE g.stream_id = s)
FROM unnest(%s::text[]) AS s
"""

INDEXED_ROWS = """
SELECT e.stream_id, e.version, e.event_id
FROM unnest(%s::text[], %s::bigint[]) AS v(stream_id, version)
JOIN events e ON e.stream_id = v.stream_id AND e.version = v.version
"""

# Held until COMMIT: the serialisation point of global positions (see the module docstring).
LOCK_HEAD = "SELECT last_position FROM index_head WHERE id FOR UPDATE"

COPY_EVENTS = """
COPY events (global_position, stream_id, category, version, event_id, event_type, data,
             content_type, metadata, created_at, partition, "offset", write_id, xid)
FROM STDIN (FORMAT BINARY)
"""
# xid8 is sent as int8: both are 8 big-endian bytes on the wire (xid8recv reads a uint64) and
# psycopg has no xid8 dumper; xids stay far below 2**63.
COPY_TYPES = [
    "int8", "text", "text", "int8", "uuid", "text", "bytea",
    "text", "jsonb", "timestamptz", "int4", "int8", "uuid", "int8",
]  # fmt: skip

# One round trip: the new head and its notification (delivered at COMMIT); the payload is
# wakeups.payload(<the same position>, <the streams>).
ADVANCE_HEAD = """
WITH h AS (UPDATE index_head SET last_position = %s WHERE id RETURNING last_position)
SELECT pg_notify('kafkastore_index', %s) FROM h
"""

# A phantom seen again (checkpoints reset and the topic re-read) keeps its first record.
INSERT_PHANTOMS = """
INSERT INTO phantoms (topic, partition, "offset", write_id, xid, stream_id, version, event_id,
                      reason)
SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::uuid[], %s::xid8[], %s::text[],
                     %s::bigint[], %s::uuid[], %s::text[])
ON CONFLICT (topic, partition, "offset") DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Begun:
    """Step 2's probe and step 3's lock, queued by :func:`begin` (None: no real event)."""

    heads: psycopg.Cursor[Any] | None
    head: psycopg.Cursor[Any] | None


NOTHING_BEGUN = Begun(None, None)


def begin(conn: psycopg.Connection, batches: Sequence[BatchLike]) -> Begun:
    """Queue step 2's probe of the batches' streams and step 3's head lock (for the caller's
    round trip, in pipeline mode). A transaction without real events takes no lock."""
    streams = list(dict.fromkeys(e.stream_id for b in batches for e in b.wire))
    if not streams:
        return NOTHING_BEGUN
    return Begun(pg.execute(conn, INDEXED_HEADS, (streams,)), pg.execute(conn, LOCK_HEAD))


def apply(
    conn: psycopg.Connection, batches: Sequence[BatchLike], begun: Begun | None = None
) -> Applied:
    """Index the real events and record the phantoms of ``batches`` in the caller's transaction.

    Every event of ``batches`` must be real (judged by the verdict rule); batches are applied in
    the given order and each batch's events in offset order, which is version order per stream.

    ``begun``: what :func:`begin` queued for (a superset of) these batches in an earlier round
    trip; the caller then moves the head itself (:func:`advance_head`, e.g. pipelined with its
    COMMIT). Without it, the probe and lock take a round trip here and the head is moved here.
    """
    events, duplicates = _unique(batches)
    phantoms = _store_phantoms(conn, batches)
    if not events:
        return Applied(0, duplicates, phantoms, None)
    advance = begun is None
    if begun is None or begun.heads is None or begun.head is None:
        with pg.translated(), conn.pipeline():
            begun = begin(conn, batches)
    assert begun.heads is not None and begun.head is not None
    with pg.translated():
        indexed_heads = begun.heads.fetchall()
        row = begun.head.fetchone()
    if row is None:
        raise IntegrityError("index_head is empty: the schema is damaged")
    ruled = {s for s, _, may_hide in indexed_heads if may_hide}
    gone: set[tuple[str, int]] = set()
    if ruled:
        # A round trip only for the events of streams with lifecycle rules.
        checked = [e for e in events if e.stream_id in ruled]
        params = (
            [e.stream_id for e in checked],
            [e.version for e in checked],
            [e.time for e in checked],
        )
        with pg.translated():
            gone = {(s, int(v)) for s, v in conn.execute(lifecycle.HIDDEN, params).fetchall()}
    if gone:
        events = [e for e in events if (e.stream_id, e.version) not in gone]
        _remember_skipped(conn, gone)
        if not events:
            return Applied(0, duplicates, phantoms, None)
    fresh = _drop_indexed(conn, events, indexed_heads)
    duplicates += len(events) - len(fresh)
    if not fresh:
        return Applied(0, duplicates, phantoms, None)
    first = int(row[0]) + 1
    streams = tuple(e.stream_id for e in fresh)
    applied = Applied(len(fresh), duplicates, phantoms, first + len(fresh) - 1, streams)
    with pg.translated():
        # COPY costs less Python per row than any INSERT, even for one event (measured).
        _copy(conn, fresh, first)
        if advance:
            advance_head(conn, applied)
    return applied


def advance_head(conn: psycopg.Connection, applied: Applied) -> None:
    """Move ``index_head`` to what :func:`apply` wrote and notify (delivered at COMMIT)."""
    if applied.last_position is not None:
        notice = wakeups.payload(applied.last_position, applied.streams)
        pg.execute(conn, ADVANCE_HEAD, (applied.last_position, notice))


def _unique(batches: Sequence[BatchLike]) -> tuple[list[WireEvent], int]:
    """Step 1: the batches' events without exact duplicates, and how many were dropped."""
    events: list[WireEvent] = []
    seen: dict[tuple[str, int], UUID] = {}
    duplicates = 0
    for batch in batches:
        for event in batch.wire:
            key = (event.stream_id, event.version)
            other = seen.get(key)
            if other is None:
                seen[key] = event.event_id
                events.append(event)
            elif other == event.event_id:
                duplicates += 1
            else:
                raise IntegrityError(
                    f"two real events at {event.stream_id!r} version {event.version}: "
                    f"{other} and {event.event_id}"
                )
    return events, duplicates


def _copy(conn: psycopg.Connection, fresh: Sequence[WireEvent], first: int) -> None:
    categories: dict[str, str] = {}
    with conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
        copy.set_types(COPY_TYPES)
        write_row = copy.write_row
        position = first
        for e in fresh:
            category = categories.get(e.stream_id)
            if category is None:
                category = categories[e.stream_id] = category_of(e.stream_id)
            write_row(
                (
                    position,
                    e.stream_id,
                    category,
                    e.version,
                    e.event_id,
                    e.type,
                    e.value,
                    e.content_type,
                    _jsonb(e.metadata_json),
                    e.time,
                    e.partition,
                    e.offset,
                    e.write_id,
                    e.xid,
                )
            )
            position += 1


# Hidden events the indexer did not index are gone for good, like scavenged ones: the stream's
# indexed head counts them (a min_version read does not wait for them) and a later re-read
# skips them whatever the metadata says then. The stream's rows that are hidden too are
# removed with them (what the scavenger would do), so that what stays indexed of a stream is
# contiguous: hidden events are a prefix of their stream (deletion, truncate_before,
# max_count, max_age), and one bound per stream says what is gone.
FORGET_HIDDEN = """
WITH gone AS (
    DELETE FROM events e USING streams s
    WHERE e.stream_id = ANY(%(streams)s::text[]) AND s.stream_id = e.stream_id
      AND NOT kafkastore_visible(e.version, e.created_at, s.version, s.truncate_before,
                                 s.max_count, s.max_age, s.deleted)
    RETURNING e.stream_id, e.version
),
merged AS (
    SELECT k.stream_id, greatest(k.below, max(g.version) + 1) AS below, count(g.version) AS n
    FROM unnest(%(streams)s::text[], %(below)s::bigint[]) AS k(stream_id, below)
    LEFT JOIN gone g ON g.stream_id = k.stream_id
    GROUP BY k.stream_id, k.below ORDER BY k.stream_id
)
INSERT INTO scavenged AS g (stream_id, below_version, removed)
SELECT stream_id, below, n FROM merged
ON CONFLICT (stream_id) DO UPDATE
SET below_version = greatest(g.below_version, excluded.below_version),
    removed = g.removed + excluded.removed, updated_at = now()
"""


def _remember_skipped(conn: psycopg.Connection, gone: set[tuple[str, int]]) -> None:
    top: dict[str, int] = {}
    for stream, version in gone:
        top[stream] = max(top.get(stream, 0), version + 1)
    streams = sorted(top)  # rows in one order everywhere: no deadlock with the scavenger
    with pg.translated():
        conn.execute(FORGET_HIDDEN, {"streams": streams, "below": [top[s] for s in streams]})


def _jsonb(metadata_json: bytes | None) -> Jsonb | None:
    """The metadata as it came off the wire (a JSON object, checked by the decoder): PostgreSQL
    parses the bytes; nothing is decoded and encoded again in Python."""
    return Jsonb(metadata_json, dumps=_as_is) if metadata_json else None


def _as_is(document: bytes) -> bytes:
    return document


def _drop_indexed(
    conn: psycopg.Connection, events: list[WireEvent], indexed_heads: Sequence[Any]
) -> list[WireEvent]:
    """``events`` without those already indexed; IntegrityError on a different indexed event.

    ``indexed_heads`` are the rows of INDEXED_HEADS for (at least) the streams of ``events``.
    Each stream lives in one partition and the checkpoint locks give this transaction the
    partitions exclusively, so no other transaction can index these streams meanwhile.
    """
    lowest: dict[str, int] = {}
    for e in events:
        if e.version < lowest.get(e.stream_id, e.version + 1):
            lowest[e.stream_id] = e.version
    heads = [(s, head) for s, head, _ in indexed_heads if s in lowest]
    overlapping = {s for s, head in heads if head is not None and head >= lowest[s]}
    for s, head in heads:
        if head is not None and head + 1 < lowest[s]:
            logger.warning(
                "stream %r: index holds versions up to %s, next indexed is %s (a gap)",
                s,
                head,
                lowest[s],
            )
        elif head is None and lowest[s] != 1:
            logger.debug("stream %r first indexed at version %s", s, lowest[s])
    if not overlapping:
        return events
    candidates = [e for e in events if e.stream_id in overlapping]
    with pg.translated():
        rows = conn.execute(
            INDEXED_ROWS,
            ([e.stream_id for e in candidates], [e.version for e in candidates]),
        ).fetchall()
    indexed = {(s, v): eid for s, v, eid in rows}
    conflicts = []
    for e in candidates:
        have = indexed.get((e.stream_id, e.version))
        if have is not None and have != e.event_id:
            conflicts.append(
                f"{e.stream_id!r} v{e.version}: indexed {have}, Kafka has {e.event_id}"
            )
    if conflicts:
        raise IntegrityError("index conflicts: " + "; ".join(conflicts[:20]))
    return [e for e in events if (e.stream_id, e.version) not in indexed]


def _store_phantoms(conn: psycopg.Connection, batches: Sequence[BatchLike]) -> int:
    rows: list[tuple[Any, ...]] = []
    for batch in batches:
        for p in batch.phantoms:
            e = p.event
            rows.append(
                (
                    batch.topic,
                    batch.partition,
                    p.offset,
                    e.write_id if e else None,
                    str(e.xid) if e else None,
                    e.stream_id if e else None,
                    e.version if e else None,
                    e.event_id if e else None,
                    p.reason.value,
                )
            )
    if not rows:
        return 0
    with pg.translated():
        conn.execute(INSERT_PHANTOMS, [list(c) for c in zip(*rows, strict=True)])
    return len(rows)
