-- kafkastore schema, version 1 (DESIGN.md section 4).

-- The committed head of each stream: the write side checks expected versions against it
-- under SELECT ... FOR UPDATE (DESIGN.md section 2, step 2).
CREATE TABLE streams (
    stream_id        text        PRIMARY KEY,
    category         text        NOT NULL,
    version          bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    metadata         jsonb,
    truncate_before  bigint,
    deleted          boolean     NOT NULL DEFAULT false
);

-- The commit marker: one row per stream per committed write, written in the writer's
-- transaction. An event read from Kafka is real iff its ce_pgwrite names a row here that lists
-- its id at its stream and version. Never deleted while Kafka keeps the events.
CREATE TABLE appends (
    write_id      uuid        NOT NULL,
    xid           xid8        NOT NULL,
    stream_id     text        NOT NULL,
    from_version  bigint      NOT NULL,
    to_version    bigint      NOT NULL,
    event_ids     uuid[]      NOT NULL,
    partition     integer,
    offsets       bigint[],
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (write_id, stream_id),
    CHECK (to_version >= from_version),
    CHECK (cardinality(event_ids) = to_version - from_version + 1)
);
-- A version belongs to one committed write: the backstop behind the head lock.
CREATE UNIQUE INDEX appends_stream_version ON appends (stream_id, from_version);
-- Idempotency lookups by client-supplied event id (DESIGN.md section 5).
CREATE INDEX appends_event_ids ON appends USING gin (event_ids);

-- The read index, written by the indexer only.
CREATE TABLE events (
    global_position  bigint      PRIMARY KEY,
    stream_id        text        NOT NULL,
    category         text        NOT NULL,
    version          bigint      NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    data             bytea       NOT NULL,
    content_type     text        NOT NULL,
    metadata         jsonb,
    created_at       timestamptz NOT NULL,
    partition        integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    write_id         uuid        NOT NULL,
    xid              xid8        NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX events_category ON events (category, global_position);
CREATE INDEX events_type ON events (event_type, global_position);

-- The indexer's consumer position, stored in the same transaction as the events it covers.
CREATE TABLE index_checkpoints (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The last global position handed out; updated under the indexer's transaction so positions
-- are gap-free in commit order.
CREATE TABLE index_head (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_position  bigint  NOT NULL
);
INSERT INTO index_head (id, last_position) VALUES (true, 0);

-- Messages of the topic judged phantoms (never indexed), kept for the audit.
CREATE TABLE phantoms (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    write_id     uuid,
    xid          xid8,
    stream_id    text,
    version      bigint,
    event_id     uuid,
    reason       text        NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

-- Positions of transactional (exactly-once) projections.
CREATE TABLE subscription_checkpoints (
    group_id     text    NOT NULL,
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

CREATE TABLE snapshots (
    stream_id   text        NOT NULL,
    version     bigint      NOT NULL,
    type        text        NOT NULL,
    data        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);

-- Facts about this store (the cluster's system identifier, recorded at first migration).
CREATE TABLE store_meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
