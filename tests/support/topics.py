"""A topic of a test's own: settings with their topic and indexer group (cleaned up by
:func:`module_settings`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kafkastore import topic
from kafkastore.config import Settings
from tests.support.names import unique

PARTITIONS = 3


def own_settings(kafka_bootstrap: str, database_url: str, **overrides: Any) -> Settings:
    """Settings (from an empty environment: a developer's ``KAFKASTORE_*`` variables must not
    change tests) with a new topic of 3 partitions, created, and an indexer group of their own;
    ``overrides`` are further settings (``auth="on"``, ...). The caller deletes the topic if it
    must."""
    settings = Settings.from_env(
        {},
        kafka=kafka_bootstrap,
        database_url=database_url,
        topic=unique("test"),
        partitions=PARTITIONS,
        indexer_group=unique("indexer"),
        **overrides,
    )
    topic.ensure_topic(settings, partitions=PARTITIONS)
    return settings


def module_settings(
    kafka_bootstrap: str, database_url: str, **overrides: Any
) -> Iterator[Settings]:
    """Settings with a new topic (3 partitions, deleted afterwards) and indexer group, for one
    test module; its tests use streams of their own (``unique("Order")``). A generator for
    ``yield from`` in a module-scoped fixture."""
    settings = own_settings(kafka_bootstrap, database_url, **overrides)
    yield settings
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([settings.topic])
