"""Metadata writes and snapshots, each in its own short transaction under the stream's row lock.

Deletes are decided with the appends (writer.decide, writer.protocol). Metadata writes and
snapshots are rare and produce nothing to Kafka, so they do not queue behind the group commit:
they take the same head row lock as the protocol's step 2 (``FOR UPDATE`` for a metadata
write, ``FOR SHARE`` for a snapshot), which is what serialises them with appends and deletes
(docs/design.md section 12): a metadata write never interleaves with an append's check of the head,
and a snapshot cannot be saved beside a tombstone being written.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from kafkastore import pg
from kafkastore.codec import encode_payload
from kafkastore.config import Settings
from kafkastore.errors import (
    InvalidRequest,
    SnapshotAboveHead,
    StreamDeleted,
    WrongMetadataVersion,
)
from kafkastore.lifecycle import MetadataUpdate
from kafkastore.records import Snapshot, StreamMetadata
from kafkastore.streams import category_of, check_event_type, check_stream_id

APPLICATION_NAME = "kafkastore-lifecycle"

# The head row, created when missing (metadata is settable before the stream has events) and
# locked like the protocol's step 2.
LOCK_HEAD = """
INSERT INTO streams AS s (stream_id, category) VALUES (%s, %s)
ON CONFLICT (stream_id) DO UPDATE SET updated_at = s.updated_at
RETURNING version, deleted, metadata_version
"""
WRITE_METADATA = """
UPDATE streams
SET max_count = %s, max_age = %s, truncate_before = %s, metadata = %s,
    metadata_version = metadata_version + 1, updated_at = now()
WHERE stream_id = %s
RETURNING metadata_version
"""
# FOR SHARE: conflicts with the writers' FOR UPDATE, so a snapshot waits for a running append
# or delete of the stream (and sees its outcome), but snapshots do not wait for each other.
SHARE_HEAD = "SELECT version, deleted FROM streams WHERE stream_id = %s FOR SHARE"
INSERT_SNAPSHOT = """
INSERT INTO snapshots (stream_id, version, type, data, content_type) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (stream_id, version)
DO UPDATE SET type = excluded.type, data = excluded.data, content_type = excluded.content_type,
              created_at = now()
RETURNING created_at
"""


def _connect(settings: Settings) -> psycopg.Connection:
    conn = pg.connect(settings.writer_url, application_name=APPLICATION_NAME)
    with pg.translated():
        pg.set_session_timeouts(
            conn,
            lock_timeout=settings.lock_timeout,
            statement_timeout=settings.statement_timeout,
            idle_timeout=settings.idle_in_transaction_timeout,
        )
    return conn


def _metadata_json(update: MetadataUpdate) -> Jsonb | None:
    extra = {k: v for k, v in (("acl", update.acl), ("custom", update.custom)) if v is not None}
    return Jsonb(extra) if extra else None


def set_metadata(settings: Settings, stream_id: str, update: MetadataUpdate) -> StreamMetadata:
    """Replace the stream's metadata when ``update.expected`` matches its ``metadata_version``;
    answer the new metadata. WrongMetadataVersion, StreamDeleted (tombstoned) and InvalidRequest
    (``truncate_before`` above the head + 1) change nothing."""
    check_stream_id(stream_id)
    with _connect(settings) as conn, pg.translated():
        row = conn.execute(LOCK_HEAD, (stream_id, category_of(stream_id))).fetchone()
        assert row is not None
        head, deleted, current = int(row[0]), bool(row[1]), int(row[2])
        if deleted:
            raise StreamDeleted(stream_id)
        if update.expected not in ("any", current):
            raise WrongMetadataVersion(stream_id, update.expected, current)
        if update.truncate_before is not None and update.truncate_before > head + 1:
            raise InvalidRequest(
                f"truncate_before {update.truncate_before} is above the head of {stream_id!r} "
                f"+ 1 ({head + 1})",
                fields=["truncate_before"],
            )
        written = conn.execute(
            WRITE_METADATA,
            (
                update.max_count,
                update.max_age,
                update.truncate_before,
                _metadata_json(update),
                stream_id,
            ),
        ).fetchone()
        assert written is not None
        conn.commit()
    return StreamMetadata(
        stream_id=stream_id,
        metadata_version=int(written[0]),
        max_count=update.max_count,
        max_age=update.max_age,
        truncate_before=update.truncate_before,
        acl=update.acl,
        custom=update.custom,
    )


def save_snapshot(
    settings: Settings,
    stream_id: str,
    version: object,
    type: object,
    data: Any,
    *,
    content_type: str | None = None,
) -> Snapshot:
    """Store a snapshot of the stream's state at ``version`` (replacing one at that version).
    SnapshotAboveHead when the stream has not reached ``version``; StreamDeleted when it is
    tombstoned."""
    check_stream_id(stream_id)
    snapshot_type = check_event_type(type, field="type")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidRequest("version must be an integer >= 1", fields=["version"])
    try:
        payload, kind = encode_payload(data, content_type)
    except TypeError as exc:
        raise InvalidRequest(f"data is not JSON-serialisable: {exc}", fields=["data"]) from None
    with _connect(settings) as conn, pg.translated():
        row = conn.execute(SHARE_HEAD, (stream_id,)).fetchone()
        head, deleted = (int(row[0]), bool(row[1])) if row else (0, False)
        if deleted:
            raise StreamDeleted(stream_id)
        if version > head:
            raise SnapshotAboveHead(stream_id, version, head)
        stored = conn.execute(
            INSERT_SNAPSHOT, (stream_id, version, snapshot_type, payload, kind)
        ).fetchone()
        assert stored is not None
        conn.commit()
    return Snapshot(stream_id, version, snapshot_type, data, stored[0], kind)
