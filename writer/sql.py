"""The statements of the append protocol (writer.protocol), named; values always as parameters."""

from __future__ import annotations

# Step 2. One upsert ordered by stream id creates the missing rows and locks every target row:
# concurrent batches take the row locks in the same order, so they never deadlock, and two
# writers creating one new stream serialise on the insert. The category is a parameter
# (kafkastore.streams.category_of) so that its rule exists once.
LOCK_STREAMS = """
INSERT INTO streams AS s (stream_id, category)
SELECT t.id, t.category FROM unnest(%b::text[], %b::text[]) AS t(id, category) ORDER BY t.id
ON CONFLICT (stream_id) DO UPDATE SET updated_at = s.updated_at
RETURNING stream_id, version, deleted, soft_deleted
"""

# The transaction's xid, and a transaction-scoped advisory lock named by it (kafkastore.verdict:
# WRITER_LOCK_SPACE, writer_lock_key), taken before anything is produced and held until COMMIT or
# ROLLBACK: a consumer that meets one of this write's messages before the commit waits on the
# lock instead of polling the xid's status.
CURRENT_XID = """
SELECT x::text, pg_advisory_xact_lock(%s, (x::text::bigint & 2147483647)::int4)
FROM pg_current_xact_id() AS x
"""

# Client-supplied event ids are locked (transaction-scoped advisory locks, in one global order,
# after the stream locks) before they are looked up: two concurrent appends reusing one id on
# different streams serialise here, so the second sees the first's committed marker. No deadlock:
# a transaction takes id locks only once it holds all its stream locks, and ids in sorted order.
EVENT_ID_LOCK_SPACE = 0x6B617673  # "kavs": the classid of our advisory locks on event ids
LOCK_EVENT_IDS = """
SELECT count(pg_advisory_xact_lock(%(space)s, k))
FROM (SELECT DISTINCT hashtext(id::text) AS k FROM unnest(%(ids)s::uuid[]) AS id ORDER BY 1) AS t
"""

# Markers holding any of the given (client-supplied) event ids; the ordinality of event_ids
# gives each id's version, and its payload digest (NULL in markers older than digests).
FIND_EVENT_IDS = """
SELECT x.id, a.stream_id, a.from_version + (x.ord - 1), a.partition, (a.offsets)[x.ord],
       (a.digests)[x.ord]
FROM appends a, unnest(a.event_ids) WITH ORDINALITY AS x(id, ord)
WHERE a.event_ids && %(ids)s::uuid[] AND x.id = ANY(%(ids)s::uuid[])
"""

# Step 5, pipelined with COMMIT: the new heads (a data-modifying WITH runs whether or not the
# INSERT reads it) and one marker row per stream, its slice [lo:hi] (1-based, inclusive) of the
# flat id/offset/digest arrays. One statement; parameters in binary (%b: arrays of uuids and
# bytes cost a third of what their text form does to dump, measured), the xid as text.
COMMIT_WRITE = """
WITH heads AS (
    UPDATE streams s SET version = u.version, soft_deleted = false, updated_at = now()
    FROM unnest(%(heads)b::text[], %(versions)b::bigint[]) AS u(stream_id, version)
    WHERE s.stream_id = u.stream_id
)
INSERT INTO appends (write_id, xid, stream_id, from_version, to_version, event_ids, partition,
                     offsets, digests)
SELECT %(write_id)b, %(xid)s::xid8, r.stream_id, r.from_version, r.to_version,
       (%(ids)b::uuid[])[r.lo:r.hi], r.partition, (%(offsets)b::bigint[])[r.lo:r.hi],
       (%(digests)b::bytea[])[r.lo:r.hi]
FROM unnest(%(streams)b::text[], %(froms)b::bigint[], %(tos)b::bigint[], %(los)b::int[],
            %(his)b::int[], %(partitions)b::int[])
     AS r(stream_id, from_version, to_version, lo, hi, partition)
"""

MARKER_EXISTS = "SELECT EXISTS (SELECT 1 FROM appends WHERE write_id = %s)"

# Deletions (writer.decide), pipelined after COMMIT_WRITE and before COMMIT: each deleted
# stream's final state in this batch. A soft delete is a metadata change (truncate_before):
# it moves metadata_version on, so a metadata write racing it fails its precondition.
APPLY_DELETIONS = """
UPDATE streams s
SET truncate_before = CASE WHEN d.hard THEN s.truncate_before ELSE d.truncate_before END,
    soft_deleted = d.soft_deleted,
    deleted = s.deleted OR d.hard,
    metadata_version = s.metadata_version + CASE WHEN d.hard THEN 0 ELSE 1 END,
    updated_at = now()
FROM unnest(%s::text[], %s::bigint[], %s::boolean[], %s::boolean[])
     AS d(stream_id, truncate_before, soft_deleted, hard)
WHERE s.stream_id = d.stream_id
"""

# A tombstone takes the stream's snapshots with it (docs/http.md: snapshots of a hard-deleted stream
# are refused and removed).
DELETE_SNAPSHOTS = "DELETE FROM snapshots WHERE stream_id = ANY(%s::text[])"
