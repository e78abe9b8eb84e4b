"""Least-privileged PostgreSQL roles for the store's processes (``kafkastore db roles``).

One role per process kind, each granted exactly what that process does (README "Security"):

- ``kafkastore_writer`` — the append protocol, metadata writes, deletes and snapshots
  (``writer_database_url`` of ``kafkastore serve`` and of an in-process ``EventStore``): heads
  and markers, never the index.
- ``kafkastore_indexer`` — ``kafkastore indexer`` and ``kafkastore scavenge``: the index, its
  checkpoints and the scavenger's memory; reads heads and markers (the verdict rule), never
  writes them.
- ``kafkastore_api`` — the reads of ``kafkastore serve`` (``database_url``), the token and
  stream-ACL caches, and the admin routes' users and tokens; writes nothing else.
- ``kafkastore_consumer`` — subscriptions: their checkpoints; reads markers (verdicts) and
  heads (hidden events). A projection's own tables are granted by its owner.

Every role may read ``schema_migrations`` and ``store_meta`` (the schema check and the
cluster's identifier). :func:`create_roles` creates the missing roles (``LOGIN``, no password:
set one with ``ALTER ROLE … PASSWORD`` or authenticate them otherwise in ``pg_hba.conf``) and
makes each role's table privileges exactly those of :data:`PRIVILEGES` (what a role had beyond
them is revoked); :func:`regrant` re-applies them after a migration (``kafkastore migrate``
does when the roles exist), so a table added later is covered. Both need a user that owns the
tables (and ``CREATEROLE`` to create roles), e.g. the one that runs the migrations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import psycopg
from psycopg import sql

from kafkastore import pg
from kafkastore.errors import SchemaError

logger = logging.getLogger("kafkastore.schema")

WRITER = "kafkastore_writer"
INDEXER = "kafkastore_indexer"
API = "kafkastore_api"
CONSUMER = "kafkastore_consumer"

_EVERY_ROLE = {"schema_migrations": "SELECT", "store_meta": "SELECT"}

PRIVILEGES: Mapping[str, Mapping[str, str]] = {
    WRITER: {
        **_EVERY_ROLE,
        "streams": "SELECT, INSERT, UPDATE",
        "appends": "SELECT, INSERT",
        "snapshots": "SELECT, INSERT, UPDATE, DELETE",
        "scavenged": "SELECT",
    },
    INDEXER: {
        **_EVERY_ROLE,
        "streams": "SELECT",
        "appends": "SELECT",
        "events": "SELECT, INSERT, DELETE",
        "index_head": "SELECT, UPDATE",
        "index_checkpoints": "SELECT, INSERT, UPDATE, DELETE",
        "phantoms": "SELECT, INSERT",
        "scavenged": "SELECT, INSERT, UPDATE",
        "snapshots": "SELECT",
    },
    API: {
        **_EVERY_ROLE,
        "streams": "SELECT",
        "appends": "SELECT",
        "events": "SELECT",
        "index_head": "SELECT",
        "index_checkpoints": "SELECT",
        "phantoms": "SELECT",
        "scavenged": "SELECT",
        "snapshots": "SELECT",
        "subscription_checkpoints": "SELECT",
        "auth_users": "SELECT, INSERT, UPDATE, DELETE",
        "auth_tokens": "SELECT, INSERT, UPDATE, DELETE",
    },
    CONSUMER: {
        **_EVERY_ROLE,
        "streams": "SELECT",
        "appends": "SELECT",
        "scavenged": "SELECT",
        "subscription_checkpoints": "SELECT, INSERT, UPDATE, DELETE",
    },
}
"""Role -> table -> the privileges it gets (nothing on a table it does not name)."""

CURRENT_SCHEMA = "SELECT current_schema()"
ROLE_EXISTS = "SELECT 1 FROM pg_roles WHERE rolname = %s"
TABLES = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
"""


def create_roles(database_url: str) -> list[str]:
    """Create the missing roles and grant each exactly its privileges; the roles created."""
    created: list[str] = []
    with pg.connect(database_url, autocommit=True) as conn, pg.translated(), conn.transaction():
        for role in PRIVILEGES:
            if conn.execute(ROLE_EXISTS, (role,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                created.append(role)
        _grant(conn)
    return created


def regrant(conn: psycopg.Connection) -> bool:
    """Re-apply the grants when the roles exist (after a migration); False when they do not."""
    if any(conn.execute(ROLE_EXISTS, (role,)).fetchone() is None for role in PRIVILEGES):
        return False
    with conn.transaction():
        _grant(conn)
    return True


def _grant(conn: psycopg.Connection) -> None:
    tables = {row[0] for row in conn.execute(TABLES)}
    missing = {t for grants in PRIVILEGES.values() for t in grants} - tables
    if missing:
        raise SchemaError(
            f"tables {sorted(missing)} are missing: run `kafkastore migrate` before `db roles`"
        )
    (name,) = conn.execute(CURRENT_SCHEMA).fetchone() or ("public",)
    for role, grants in PRIVILEGES.items():
        who = sql.Identifier(role)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(name), who))
        for table in sorted(tables):
            conn.execute(
                sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.Identifier(table), who)
            )
        for table, privileges in grants.items():
            conn.execute(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(privileges), sql.Identifier(table), who
                )
            )
    logger.info("granted the privileges of %s", ", ".join(PRIVILEGES))
