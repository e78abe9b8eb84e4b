"""Fixtures of the indexer tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kafkastore import schema
from tests.support.databases import temporary_database


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """A new, migrated database for tests that assert on whole tables (positions, audit)."""
    with temporary_database(database_url) as url:
        schema.migrate(url)
        yield url
