"""Consumer positions stored in PostgreSQL, in the projection's own transaction.

A projection that writes to PostgreSQL gets exactly-once processing by storing its Kafka
position (``next_offset`` per partition) in the same transaction as its writes (the
eventsourcing library's "tracking record" idea). Offsets in Kafka are then only for lag tooling.

Fencing (docs/design.md section 6): after a rebalance, a paused or slow instance ("zombie") may
still hold a batch of a partition that another instance now owns. Every batch therefore starts by
locking its partitions' rows (``SELECT ... FOR UPDATE``, in partition order so two instances
never deadlock) and comparing the stored offset with the batch's first offset. A mismatch means
another instance moved on (or has not got there): the batch is dropped and the consumer re-seeks
to the stored offset. Two instances racing on the same offset serialise on the row lock; the
second one sees the first one's advanced offset and is fenced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import psycopg
from psycopg import sql

from kafkastore import pg

CheckpointTable = Literal["index_checkpoints", "subscription_checkpoints"]

# Statements per table. ``index_checkpoints`` has one group (the indexer's) per topic;
# ``subscription_checkpoints`` is keyed by group_id as well.
_LOAD = {
    "index_checkpoints": """
        SELECT partition, next_offset FROM index_checkpoints
        WHERE topic = %(topic)s AND partition = ANY(%(partitions)s::int[])
    """,
    "subscription_checkpoints": """
        SELECT partition, next_offset FROM subscription_checkpoints
        WHERE group_id = %(group)s AND topic = %(topic)s
          AND partition = ANY(%(partitions)s::int[])
    """,
}

# A missing row is created at the batch's start offset: the first batch ever of a partition
# starts where the consumer began (the low watermark, or the high one for "from the end").
# DO NOTHING keeps any row another instance created meanwhile; the SELECT below then sees it.
_INSERT_MISSING = {
    "index_checkpoints": """
        INSERT INTO index_checkpoints (topic, partition, next_offset)
        SELECT %(topic)s, p, o FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS v(p, o)
        ON CONFLICT (topic, partition) DO NOTHING
    """,
    "subscription_checkpoints": """
        INSERT INTO subscription_checkpoints (group_id, topic, partition, next_offset)
        SELECT %(group)s, %(topic)s, p, o
        FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS v(p, o)
        ON CONFLICT (group_id, topic, partition) DO NOTHING
    """,
}

# Row locks in partition order: concurrent instances lock in the same order, so no deadlock.
_LOCK = {
    "index_checkpoints": """
        SELECT partition, next_offset FROM index_checkpoints
        WHERE topic = %(topic)s AND partition = ANY(%(partitions)s::int[])
        ORDER BY partition
        FOR UPDATE
    """,
    "subscription_checkpoints": """
        SELECT partition, next_offset FROM subscription_checkpoints
        WHERE group_id = %(group)s AND topic = %(topic)s
          AND partition = ANY(%(partitions)s::int[])
        ORDER BY partition
        FOR UPDATE
    """,
}

_ADVANCE = {
    "index_checkpoints": """
        UPDATE index_checkpoints c SET next_offset = v.o, updated_at = now()
        FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS v(p, o)
        WHERE c.topic = %(topic)s AND c.partition = v.p
    """,
    "subscription_checkpoints": """
        UPDATE subscription_checkpoints c SET next_offset = v.o, updated_at = now()
        FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS v(p, o)
        WHERE c.group_id = %(group)s AND c.topic = %(topic)s AND c.partition = v.p
    """,
}

_RESET = {
    "index_checkpoints": "DELETE FROM index_checkpoints WHERE topic = %(topic)s",
    "subscription_checkpoints": """
        DELETE FROM subscription_checkpoints WHERE group_id = %(group)s AND topic = %(topic)s
    """,
}


class PgCheckpoints:
    """Per-partition ``next_offset`` of one consumer group, in one of the checkpoint tables."""

    def __init__(self, *, table: CheckpointTable, group: str | None) -> None:
        if table not in _LOAD:
            raise ValueError(f"unknown checkpoint table {table!r}")
        if table == "subscription_checkpoints" and not group:
            raise ValueError("subscription_checkpoints needs a group")
        self.table: CheckpointTable = table
        self.group = group
        self._seen: set[tuple[str, int]] = set()

    def __repr__(self) -> str:
        return f"PgCheckpoints(table={self.table!r}, group={self.group!r})"

    def _params(self, topic: str, **more: object) -> dict[str, object]:
        return {"group": self.group, "topic": topic, **more}

    def load(
        self, conn: psycopg.Connection, topic: str, partitions: Iterable[int]
    ) -> dict[int, int]:
        """Stored ``next_offset`` per partition; partitions never stored are absent."""
        params = self._params(topic, partitions=sorted(set(partitions)))
        with pg.translated():
            rows = conn.execute(sql.SQL(_LOAD[self.table]), params).fetchall()
        return {int(p): int(o) for p, o in rows}

    def lock(
        self,
        conn: psycopg.Connection,
        topic: str,
        starts: Mapping[int, int],
        *,
        then: Callable[[psycopg.Connection], None] | None = None,
    ) -> dict[int, int]:
        """Lock the rows of these partitions (creating missing ones at ``starts``) for the rest
        of the caller's transaction; return the stored offsets. ``then`` queues more statements
        in the same round trip, after the locks (pipeline mode).

        A row this instance has locked before is not inserted again (one statement less per
        batch); should it be gone since (a reset), it is created in a second round trip.
        """
        if not starts:
            return {}
        partitions = sorted(starts)
        unseen = [p for p in partitions if (topic, p) not in self._seen]
        stored = self._lock(conn, topic, partitions, starts, create=unseen, then=then)
        gone = [p for p in partitions if p not in stored and p not in unseen]
        if gone:
            stored.update(self._lock(conn, topic, gone, starts, create=gone))
        self._seen.update((topic, p) for p in stored)
        return stored

    def _lock(
        self,
        conn: psycopg.Connection,
        topic: str,
        partitions: list[int],
        starts: Mapping[int, int],
        *,
        create: list[int],
        then: Callable[[psycopg.Connection], None] | None = None,
    ) -> dict[int, int]:
        with pg.translated(), conn.pipeline():  # one round trip
            if create:
                offsets = [starts[p] for p in create]
                inserted = self._params(topic, partitions=create, offsets=offsets)
                pg.execute(conn, _INSERT_MISSING[self.table], inserted)
            locked = self._params(topic, partitions=partitions)
            cur = pg.execute(conn, _LOCK[self.table], locked)
            if then is not None:
                then(conn)
            rows = cur.fetchall()
        return {int(p): int(o) for p, o in rows}

    def lock_and_check(
        self, conn: psycopg.Connection, topic: str, starts: Mapping[int, int]
    ) -> set[int]:
        """Lock the rows and return the fenced partitions: those whose stored offset is not
        the batch's first offset (another instance moved on, or this one is behind)."""
        stored = self.lock(conn, topic, starts)
        return {p for p, first in starts.items() if stored.get(p) != first}

    def advance(
        self, conn: psycopg.Connection, topic: str, next_offsets: Mapping[int, int]
    ) -> None:
        """Store new offsets for partitions locked by :meth:`lock` in this transaction."""
        if not next_offsets:
            return
        partitions = sorted(next_offsets)
        params = self._params(
            topic, partitions=partitions, offsets=[next_offsets[p] for p in partitions]
        )
        with pg.translated():
            pg.execute(conn, _ADVANCE[self.table], params)

    def reset(self, conn: psycopg.Connection, topic: str) -> None:
        """Forget every stored offset of this group and topic (a projection rebuild)."""
        with pg.translated():
            conn.execute(sql.SQL(_RESET[self.table]), self._params(topic))
