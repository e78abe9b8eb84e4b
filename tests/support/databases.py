"""Throw-away databases on the session's PostgreSQL server (for tests that need an empty one)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo, sql

from tests.support.names import unique


@contextmanager
def temporary_database(database_url: str) -> Iterator[str]:
    """Create an empty database beside ``database_url``'s, yield its URL, drop it."""
    name = unique("test").replace("-", "_")
    admin_url = _with_dbname(database_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(database_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


def _with_dbname(database_url: str, dbname: str) -> str:
    """The same server and credentials, another database; URLs stay URLs."""
    parts = urlsplit(database_url)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(path="/" + dbname))
    return conninfo.make_conninfo(database_url, dbname=dbname)
