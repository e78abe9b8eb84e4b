"""The events topic as the broker reports it (docs/design.md section 3), read with the
AdminClient."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from kafkastore import kafka, topic
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError


def _broker_view(settings: Settings) -> tuple[int, dict[str, str]]:
    admin = AdminClient({"bootstrap.servers": settings.kafka})
    partitions = len(admin.list_topics(timeout=10).topics[settings.topic].partitions)
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    return partitions, {name: entry.value for name, entry in entries.items()}


def test_created_topic_keeps_events_forever_and_never_compacts(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(partitions=4)

    partitions, config = _broker_view(settings)

    assert partitions == 4
    assert config["cleanup.policy"] == "delete"
    assert config["retention.ms"] == "-1"
    assert config["retention.bytes"] == "-1"
    # min(2, replicas) with one replica on the test broker.
    assert config["min.insync.replicas"] == "1"
    assert config["unclean.leader.election.enable"] == "false"


def test_ensuring_an_existing_topic_again_verifies_it_without_change(settings: Settings) -> None:
    info = topic.ensure_topic(settings, partitions=3)

    assert info.created is False
    assert info.partitions == 3
    assert _broker_view(settings)[0] == 3


def test_a_different_partition_count_for_an_existing_topic_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="partitions"):
        topic.ensure_topic(settings, partitions=5)

    assert _broker_view(settings)[0] == 3


def test_a_topic_the_broker_does_not_know_yet_reads_as_missing_not_as_an_outage(
    settings: Settings,
) -> None:
    # Right after a create, the broker that answers describe_configs may not know the topic yet
    # (three brokers: it failed `make test` once as "Kafka unavailable"); ensure_topic waits.
    client = kafka.admin(settings)
    missing = f"never-created-{uuid.uuid4().hex}"

    assert kafka.topic_configs(client, missing, timeout=10) is None
    assert kafka.topic_configs(client, settings.topic, timeout=10) is not None
    assert topic.describe_topic(settings.replace(topic=missing)) is None
