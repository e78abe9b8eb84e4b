"""Versioned migrations (docs/design.md section 4): applying them twice changes nothing."""

from __future__ import annotations

import psycopg

from kafkastore import schema
from tests.support.databases import temporary_database

CATALOG = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = current_schema()
ORDER BY table_name, column_name
"""
INDEXES = (
    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1"
)


def _shape(database_url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(CATALOG).fetchall(), conn.execute(INDEXES).fetchall()


def test_migrations_applied_twice_change_nothing_the_second_time(postgres_url: str) -> None:
    with temporary_database(postgres_url) as url:
        first = schema.migrate(url)
        version = schema.current_version(url)
        shape = _shape(url)

        second = schema.migrate(url)

        assert first, "an empty database gets every migration"
        assert second == []
        assert schema.current_version(url) == version >= 1
        assert _shape(url) == shape


def test_migrated_database_has_the_tables_of_the_design(database_url: str) -> None:
    tables = {row[0] for row in _shape(database_url)[0]}

    assert {"streams", "appends", "events", "index_checkpoints"} <= tables
