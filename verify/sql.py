"""The statements of the verification projection (:mod:`verify.consumer`) and its observer.

Two tables in the run's own database: ``verify_delivered`` is every delivery in order (no unique
key on purpose: a duplicate delivery must show, not fail), ``verify_state`` the projection's
state per stream (count, sum of the events' ``n``, last version), which the checker compares to
the model it computes from the history.
"""

from __future__ import annotations

CREATE_TABLES = """
CREATE TABLE IF NOT EXISTS verify_delivered (
    serial bigserial PRIMARY KEY,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    event_id uuid NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS verify_state (
    stream_id text PRIMARY KEY,
    events bigint NOT NULL,
    total bigint NOT NULL,
    last_version bigint NOT NULL
)
"""

INSERT_DELIVERED = "INSERT INTO verify_delivered (stream_id, version, event_id) VALUES (%s, %s, %s)"

UPSERT_STATE = """
INSERT INTO verify_state AS s (stream_id, events, total, last_version) VALUES (%s, 1, %s, %s)
ON CONFLICT (stream_id) DO UPDATE
SET events = s.events + 1, total = s.total + EXCLUDED.total,
    last_version = greatest(s.last_version, EXCLUDED.last_version)
"""

DELIVERED = """
SELECT stream_id, version, event_id::text, extract(epoch FROM delivered_at)::float8
FROM verify_delivered ORDER BY serial
"""
"""Every delivery in order, with its time (seconds since the epoch, the server's clock)."""

STATE = "SELECT stream_id, events, total, last_version FROM verify_state"

DELIVERED_COUNT = "SELECT count(*) FROM verify_delivered"

TABLES_EXIST = "SELECT to_regclass('verify_delivered') IS NOT NULL"

INDEX_HEAD = "SELECT coalesce(max(global_position), 0) FROM events"

UNDELIVERED = """
SELECT count(*) FROM events e
WHERE e.global_position <= %s
  AND NOT EXISTS (SELECT 1 FROM verify_delivered d WHERE d.event_id = e.event_id)
"""
"""How many of the indexed events up to a position the projection has not delivered."""

# The WAL-losing crash (verify.faults.CrashPostgres): ALTER SYSTEM takes no parameters, so the
# two values are fixed statements.
SYNCHRONOUS_COMMIT_OFF = "ALTER SYSTEM SET synchronous_commit = off"

SYNCHRONOUS_COMMIT_RESET = "ALTER SYSTEM RESET synchronous_commit"

RELOAD = "SELECT pg_reload_conf()"

XMAX = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text"
"""One past the highest completed xid (takes none): once it is past an xid, every xid up to it
was handed out and its transaction is over."""
