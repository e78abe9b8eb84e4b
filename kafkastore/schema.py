"""Versioned SQL migrations (``kafkastore/sql/migrations/NNNN_name.sql``), applied in order.

Each migration runs in its own transaction under an advisory lock, so concurrent
``kafkastore migrate`` runs (several services starting at once) apply each file exactly once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from psycopg import sql

from kafkastore import dbroles, pg
from kafkastore.errors import SchemaError

logger = logging.getLogger("kafkastore.schema")

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MIGRATION_LOCK_KEY = 0x6B616673  # "kafs": one advisory lock id for schema changes

CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this version of kafkastore, in order."""
    found = []
    folder = resources.files("kafkastore").joinpath("sql/migrations")
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def migrate(database_url: str) -> list[str]:
    """Apply the missing migrations; return the names applied (empty when up to date)."""
    applied: list[str] = []
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(CREATE_VERSION_TABLE)
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            known = migrations()
            newest = known[-1].version if known else 0
            if done and max(done) > newest:
                raise SchemaError(
                    f"the database schema is at version {max(done)}, newer than this "
                    f"kafkastore ({newest}); upgrade kafkastore"
                )
            for migration in known:
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.SQL(migration.sql))  # type: ignore[arg-type,unused-ignore]
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(f"{migration.version:04d}_{migration.name}")
                logger.info("applied migration %s", applied[-1])
            if not pg.record_system_identifier(conn):
                logger.warning("cannot read pg_control_system(); ce_pgsysid will be unknown")
            if applied and dbroles.regrant(conn):
                logger.info("re-granted the privileges of the database roles (db roles)")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied


def current_version(database_url: str) -> int:
    """The schema version of the database (0 when never migrated)."""
    with pg.connect(database_url, autocommit=True) as conn, pg.translated():
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0


def require_current(database_url: str) -> None:
    """Fail fast when the schema is older than this code."""
    have = current_version(database_url)
    want = migrations()[-1].version
    if have < want:
        raise SchemaError(
            f"the database schema is at version {have}, kafkastore needs {want}: "
            "run `kafkastore migrate`"
        )
