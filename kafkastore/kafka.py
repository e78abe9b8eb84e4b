"""Kafka client factories and the one boundary where confluent-kafka errors become ours."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError, KafkaStoreError, Unavailable

logger = logging.getLogger("kafkastore.kafka")

# Producer settings that the append protocol's correctness rests on (DESIGN.md sections 1-3).
# Not overridable by ``extra_kafka``: the append protocol's correctness rests on them.
PRODUCER_REQUIRED: Mapping[str, Any] = {
    # No duplicates or reordering from librdkafka's own retries within a partition.
    "enable.idempotence": True,
    # An ack means the event is on every in-sync replica (min.insync.replicas of the topic).
    "acks": "all",
    # The same key -> partition mapping as Java clients (Kafka Streams, Connect, ksqlDB).
    "partitioner": "murmur2_random",
    "max.in.flight.requests.per.connection": 5,
}
PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "message.max.bytes": 8 * 1024 * 1024,
}

_FATAL_OR_CONFIG = {
    KafkaError._INVALID_ARG,
    KafkaError.INVALID_CONFIG,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


def base_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka, **settings.extra_kafka}


def producer(settings: Settings, **overrides: Any) -> Producer:
    config = {
        **PRODUCER_DEFAULTS,
        "compression.type": settings.compression,
        **base_config(settings),
        **PRODUCER_REQUIRED,
        "linger.ms": settings.linger_ms,
        # A batch whose reports do not all arrive in time is rolled back (DESIGN.md section 2).
        "message.timeout.ms": int(settings.delivery_timeout * 1000),
        **overrides,
    }
    return Producer(config)


def consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    config = {
        **base_config(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        **overrides,
    }
    return Consumer(config)


def admin(settings: Settings) -> AdminClient:
    return AdminClient(base_config(settings))


def translate(exc: BaseException) -> KafkaStoreError | None:
    """Our error for a confluent-kafka exception or KafkaError, or None when unmapped."""
    error: KafkaError | None
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
    else:
        return None
    return translate_error(error)


def translate_error(error: KafkaError) -> KafkaStoreError:
    if error.code() in _FATAL_OR_CONFIG:
        return ConfigurationError(f"Kafka: {error.str()}")
    return Unavailable(f"Kafka unavailable: {error.str()}")


def check_reachable(settings: Settings, timeout: float = 5.0) -> int:
    """Number of brokers answering a metadata request; raises Unavailable when none does."""
    try:
        metadata = admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise Unavailable(f"Kafka unreachable at {settings.kafka}: {exc}") from exc
    return len(metadata.brokers)
