"""Fixtures of the consumer tests (temporary until the shared tests/conftest.py lands)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from kafkastore import schema, topic
from kafkastore.config import Settings, environ_get
from tests.support.wire import ManualWriter


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
def make_settings(kafka_bootstrap: str, database_url: str) -> Callable[..., Settings]:
    def make(partitions: int = 3, **overrides: object) -> Settings:
        settings = Settings.from_env(
            {},
            kafka=kafka_bootstrap,
            database_url=database_url,
            topic=f"test-consumers-{uuid.uuid4().hex[:12]}",
            partitions=partitions,
            **overrides,
        )
        topic.ensure_topic(settings)
        return settings

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def writer(settings: Settings) -> Iterator[ManualWriter]:
    with ManualWriter(settings) as w:
        yield w
