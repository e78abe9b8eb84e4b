-- Stream lifecycle (API.md "Stream lifecycle", DESIGN.md section 12): metadata with its own
-- version, soft delete, retention, the scavenger's memory, snapshots.
--
-- Metadata and deletion state live on the stream's head row, so they change under the same
-- row lock as appends (one serialisation point per stream). 0001 already has
-- streams.metadata (jsonb: {"acl": ..., "custom": ...}), streams.truncate_before and
-- streams.deleted (the tombstone of a hard delete: no append can pass it).

ALTER TABLE streams
    ADD COLUMN metadata_version bigint  NOT NULL DEFAULT 0 CHECK (metadata_version >= 0),
    ADD COLUMN max_count        bigint  CHECK (max_count >= 1),
    ADD COLUMN max_age          bigint  CHECK (max_age >= 1),
    -- A soft delete sets truncate_before to head + 1 and this flag; the next append clears it.
    ADD COLUMN soft_deleted     boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT streams_truncate_before CHECK (truncate_before >= 0);

-- The one rule of what a read may show (every read path calls it, in SQL): an event is hidden
-- when its stream is tombstoned, below truncate_before, older than the newest max_count events
-- of the stream's head, or older than max_age seconds. A stream without a row (never written
-- through the writer) hides nothing. Inlined by the planner (one SQL expression, STABLE).
CREATE FUNCTION kafkastore_visible(
    version bigint, created_at timestamptz, head bigint, truncate_before bigint,
    max_count bigint, max_age bigint, deleted boolean
) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT NOT coalesce(deleted, false)
       AND version >= coalesce(truncate_before, 1)
       AND (max_count IS NULL OR version > head - max_count)
       AND (max_age IS NULL OR created_at >= now() - make_interval(secs => max_age))
$$;

-- The streams whose events may be hidden: what the scavenger walks.
CREATE INDEX streams_lifecycle ON streams (stream_id)
    WHERE deleted OR truncate_before IS NOT NULL OR max_count IS NOT NULL
       OR max_age IS NOT NULL;

-- What the scavenger removed from ``events``, per stream: every version below below_version
-- is gone for good (the indexer never indexes them again when it re-reads old offsets), and
-- ``removed`` counts the rows (the global positions they held), for the audit.
CREATE TABLE scavenged (
    stream_id      text    PRIMARY KEY,
    below_version  bigint  NOT NULL,
    removed        bigint  NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- 0001's snapshots gain their content type (data is stored as bytes, JSON by default).
ALTER TABLE snapshots ADD COLUMN content_type text NOT NULL DEFAULT 'application/json';
