"""The events topic: created with the configuration of docs/design.md section 3, and verified."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from kafkastore import kafka
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError, KafkaStoreError, Unavailable
from kafkastore.retry import Backoff

logger = logging.getLogger("kafkastore.topic")


def topic_config(replication_factor: int) -> dict[str, str]:
    """Never compaction (it would keep one event per stream); keep events forever."""
    return {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "min.insync.replicas": str(min(2, replication_factor)),
        "unclean.leader.election.enable": "false",
        "message.timestamp.type": "CreateTime",
        "max.message.bytes": str(8 * 1024 * 1024),
    }


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    created: bool = False


@contextlib.contextmanager
def _admin_call(what: str) -> Iterator[None]:
    """Any Kafka failure of the admin calls inside is Unavailable(``what: reason``).

    Also authorization and configuration errors (which :data:`kafkastore.kafka.ERRORS` calls
    ConfigurationError): the callers - the indexer's start, a subscription creating its
    dead-letter topic - wait admin failures out and try again.
    """
    try:
        with kafka.translated():
            yield
    except KafkaStoreError as exc:
        raise Unavailable(f"{what}: {exc.message}") from exc


def describe_topic(settings: Settings, *, timeout: float = 10.0) -> TopicInfo | None:
    """The topic as the cluster sees it, or None when it does not exist."""
    client = kafka.admin(settings)
    with _admin_call(f"Kafka unreachable at {settings.kafka}"):
        # All topics, not list_topics(topic=...): a metadata request naming a missing topic
        # makes a broker with auto.create.topics.enable create it with the broker defaults.
        metadata = client.list_topics(timeout=timeout)
    topic = metadata.topics.get(settings.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        return None
    replicas = len(next(iter(topic.partitions.values())).replicas)
    with _admin_call(f"cannot read the configuration of {settings.topic!r}"):
        configs = kafka.topic_configs(client, settings.topic, timeout=timeout)
    if configs is None:
        return None  # listed by one broker, not yet known to the one describing it
    return TopicInfo(
        name=settings.topic,
        partitions=len(topic.partitions),
        replication_factor=replicas,
        config={name: entry.value for name, entry in configs.items()},
    )


def ensure_topic(
    settings: Settings, *, partitions: int | None = None, timeout: float = 30.0
) -> TopicInfo:
    """Create the events topic when missing; verify it when present.

    A different partition count on an existing topic is refused: the stream -> partition
    mapping (murmur2 of the key modulo the count) would change under every consumer.
    """
    want_partitions = partitions or settings.partitions
    existing = describe_topic(settings)
    if existing is not None:
        if partitions is not None and existing.partitions != partitions:
            raise ConfigurationError(
                f"topic {settings.topic!r} exists with {existing.partitions} partitions; "
                f"refusing to use {partitions}: changing the partition count moves streams "
                "to other partitions and breaks per-stream order"
            )
        _verify(existing, settings)
        return existing
    client = kafka.admin(settings)
    new = NewTopic(
        settings.topic,
        num_partitions=want_partitions,
        replication_factor=settings.replication_factor,
        config=topic_config(settings.replication_factor),
    )
    with _admin_call(f"cannot create topic {settings.topic!r}"):
        # Another process may create it first: then it is verified like an existing one.
        kafka.create_topic(client, new, timeout=timeout)
    info = _wait_for(settings, timeout)
    _verify(info, settings)
    return TopicInfo(
        name=info.name,
        partitions=info.partitions,
        replication_factor=info.replication_factor,
        config=info.config,
        created=True,
    )


def _wait_for(settings: Settings, timeout: float) -> TopicInfo:
    """The new topic once the broker we ask knows it (creation reaches brokers in a moment)."""
    for _attempt in Backoff(initial=0.1, maximum=0.1).attempts(timeout=timeout):
        info = describe_topic(settings)
        if info is not None:
            return info
    raise Unavailable(f"topic {settings.topic!r} did not appear within {timeout}s")


def _verify(info: TopicInfo, settings: Settings) -> None:
    """Refuse a topic whose configuration would lose events or break ordering."""
    problems = []
    if info.config.get("cleanup.policy") != "delete":
        problems.append(f"cleanup.policy={info.config.get('cleanup.policy')} (must be delete)")
    if info.config.get("unclean.leader.election.enable") == "true":
        problems.append("unclean.leader.election.enable=true")
    if info.config.get("retention.ms") not in (None, "-1"):
        logger.warning(
            "topic %r has retention.ms=%s: Kafka will delete events the store promised to keep",
            settings.topic,
            info.config.get("retention.ms"),
        )
    if problems:
        raise ConfigurationError(
            f"topic {settings.topic!r} is misconfigured: " + "; ".join(problems)
        )
