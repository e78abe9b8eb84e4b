"""Kafka client factories and the one boundary where confluent-kafka errors become ours.

:data:`ERRORS` maps Kafka error codes to our error classes; :func:`translated` applies it to
the calls in its block (``raise Ours(...) from exc``); :func:`create_topic` is the one call whose
error code decides the outcome (an existing topic is not a failure).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError, KafkaStoreError, Unavailable

logger = logging.getLogger("kafkastore.kafka")

# Producer settings that the append protocol's correctness rests on (docs/design.md sections 1-3).
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

# Kafka error code -> our error class. A code not listed is Unavailable: a broker, the network
# or a timeout, worth trying again later (librdkafka itself retries what it can before it
# reports). The listed ones do not get better by waiting: a setting or an ACL must change.
ERRORS: Mapping[int, type[KafkaStoreError]] = {
    KafkaError._INVALID_ARG: ConfigurationError,
    KafkaError.INVALID_CONFIG: ConfigurationError,
    KafkaError.TOPIC_AUTHORIZATION_FAILED: ConfigurationError,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: ConfigurationError,
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
        # A batch whose reports do not all arrive in time is rolled back (docs/design.md section 2).
        "message.timeout.ms": int(settings.delivery_timeout * 1000),
        **overrides,
    }
    return Producer(config)


def writer_producer(settings: Settings, **overrides: Any) -> Producer:
    """The writer's producer: :func:`producer` with ``writer_kafka`` over ``extra_kafka`` (the
    writer's SASL principal, the only one allowed to produce to the events topic)."""
    principal = {k: v for k, v in settings.writer_kafka.items() if k not in PRODUCER_REQUIRED}
    return producer(settings, **{**principal, **overrides})


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
    """Our error for a confluent-kafka exception (by :data:`ERRORS`), or None for any other."""
    if not isinstance(exc, KafkaException):
        return None
    if exc.args and isinstance(exc.args[0], KafkaError):
        return translate_error(exc.args[0])
    return Unavailable(f"Kafka unavailable: {exc}")


def translate_error(error: KafkaError) -> KafkaStoreError:
    """Our error for a KafkaError (a delivery report's, a message's or an exception's)."""
    ours = ERRORS.get(error.code(), Unavailable)
    if ours is Unavailable:
        return Unavailable(f"Kafka unavailable: {error.str()}")
    return ours(f"Kafka: {error.str()}")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise confluent-kafka exceptions as ours (``raise Ours(...) from exc``).

    Callers that tolerate a failed call (an offset commit racing with a rebalance, a seek of a
    partition revoked meanwhile) catch :class:`~kafkastore.errors.KafkaStoreError` around it.
    """
    try:
        yield
    except KafkaException as exc:
        ours = translate(exc)
        assert ours is not None  # translate maps every KafkaException
        raise ours from exc


def topic_configs(client: AdminClient, topic: str, *, timeout: float) -> dict[str, Any] | None:
    """The configuration entries of ``topic``; None when the broker asked does not know it yet
    (a topic just created reaches each broker's metadata a moment later). Other failures raise
    ours (:data:`ERRORS`)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    with translated():
        try:
            configs: dict[str, Any] = client.describe_configs([resource])[resource].result(
                timeout=timeout
            )
        except KafkaException as exc:
            if _code_of(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise
    return configs


def create_topic(client: AdminClient, new: NewTopic, *, timeout: float) -> bool:
    """Create a topic and wait for the controller; False when it exists already.

    Other failures raise ours (:data:`ERRORS`).
    """
    with translated():
        future = client.create_topics([new], operation_timeout=timeout)[new.topic]
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if _code_of(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            raise
    return True


def _code_of(exc: KafkaException) -> int | None:
    """The Kafka error code an admin future's exception carries (None without one)."""
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def check_reachable(settings: Settings, timeout: float = 5.0) -> int:
    """Number of brokers answering a metadata request; raises Unavailable when none does."""
    try:
        metadata = admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise Unavailable(f"Kafka unreachable at {settings.kafka}: {exc}") from exc
    return len(metadata.brokers)
