"""Fixtures of the replicated topology: ``kafka_cluster`` (three KRaft nodes, see
:mod:`dev.kafka_cluster`) and ``replicated_settings`` (a topic at RF=3, min.insync.replicas=2)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from dev import kafka_cluster as dev_cluster
from kafkastore import topic
from kafkastore.config import Settings
from tests.support import unique
from tests.support.services import SessionServices


@pytest.fixture
def kafka_cluster(session_services: SessionServices) -> Iterator[dev_cluster.KafkaCluster]:
    """Three combined KRaft nodes of this test's own (kept, with their logs, when it fails)."""
    home = session_services.workdir / unique("cluster")
    try:
        cluster = dev_cluster.start(home, nodes=3)
    except Exception as exc:
        pytest.fail(f"a three-node Kafka cluster did not start: {exc}", pytrace=False)
    yield cluster
    cluster.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def replicated_settings(
    kafka_cluster: dev_cluster.KafkaCluster, database_url: str
) -> Callable[..., Settings]:
    """``replicated_settings(**overrides)``: settings on the cluster with a topic of their own
    at RF=3 (the topic configuration then sets ``min.insync.replicas=2``)."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "kafka": kafka_cluster.bootstrap,
            "database_url": database_url,
            "topic": unique("replicated"),
            "partitions": 3,
            "replication_factor": 3,
            "indexer_group": unique("indexer"),
            **overrides,
        }
        settings = Settings.from_env({}, **values)
        topic.ensure_topic(settings, partitions=settings.partitions)
        return settings

    return make
