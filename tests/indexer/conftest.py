"""Fixtures of the indexer tests (temporary until tests/conftest.py lands)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from kafkastore import schema
from kafkastore.config import environ_get


@pytest.fixture(scope="session")
def database_url() -> str:
    url = environ_get("KAFKASTORE_TEST_DATABASE_URL")
    if not url:
        pytest.fail("KAFKASTORE_TEST_DATABASE_URL is not set")
    schema.migrate(url)
    return url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    servers = environ_get("KAFKASTORE_TEST_KAFKA")
    if not servers:
        pytest.fail("KAFKASTORE_TEST_KAFKA is not set")
    return servers


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """A new, migrated database for tests that assert on whole tables (positions, audit)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # test-only identifier we generated
    url = database_url.rsplit("/", 1)[0] + "/" + name
    schema.migrate(url)
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
