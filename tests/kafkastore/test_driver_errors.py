"""The two driver boundaries map by their tables: psycopg and confluent-kafka errors -> ours."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from confluent_kafka import KafkaError, KafkaException
from psycopg_pool import PoolTimeout

from kafkastore import kafka, pg
from kafkastore.errors import ConfigurationError, KafkaStoreError, SchemaError, Unavailable


@pytest.mark.parametrize(
    ("driver", "ours", "starts"),
    [
        (PoolTimeout("couldn't get a connection"), Unavailable, "PostgreSQL pool exhausted: "),
        (psycopg.errors.UndefinedTable("no events"), SchemaError, "the kafkastore schema"),
        (psycopg.errors.UndefinedColumn("no digests"), SchemaError, "the kafkastore schema is"),
        (psycopg.errors.LockNotAvailable("lock timeout"), Unavailable, "PostgreSQL unavailable"),
        (psycopg.errors.QueryCanceled("statement timeout"), Unavailable, "PostgreSQL unavailable"),
        (psycopg.errors.IdleInTransactionSessionTimeout("idle"), Unavailable, "PostgreSQL"),
        (psycopg.OperationalError("connection refused\nmore"), Unavailable, "PostgreSQL"),
    ],
)
def test_mapped_psycopg_errors_become_ours(
    driver: psycopg.Error, ours: type[KafkaStoreError], starts: str
) -> None:
    translated = pg.translate(driver)

    assert type(translated) is ours
    assert translated.message.startswith(starts)
    assert "\n" not in translated.message


def test_unmapped_psycopg_errors_propagate_unchanged() -> None:
    error = psycopg.errors.UniqueViolation("duplicate key")

    with pytest.raises(psycopg.errors.UniqueViolation), pg.translated():
        raise error
    assert pg.translate(error) is None


def test_pg_translated_raises_ours_from_the_driver_error() -> None:
    error = psycopg.OperationalError("server closed the connection")

    with pytest.raises(Unavailable) as caught, pg.translated():
        raise error
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    ("code", "ours"),
    [
        (KafkaError._TRANSPORT, Unavailable),
        (KafkaError._TIMED_OUT, Unavailable),
        (KafkaError.NOT_LEADER_FOR_PARTITION, Unavailable),
        (KafkaError.INVALID_CONFIG, ConfigurationError),
        (KafkaError._INVALID_ARG, ConfigurationError),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, ConfigurationError),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, ConfigurationError),
    ],
)
def test_kafka_errors_map_by_their_code(code: int, ours: type[KafkaStoreError]) -> None:
    error = KafkaException(KafkaError(code, "reason"))

    with pytest.raises(ours) as caught, kafka.translated():
        raise error
    assert type(caught.value) is ours
    assert caught.value.message.endswith("reason")
    assert caught.value.__cause__ is error


def test_every_kafka_exception_becomes_ours_and_nothing_else_does() -> None:
    assert isinstance(kafka.translate(KafkaException("no KafkaError inside")), Unavailable)
    assert kafka.translate(ValueError("not Kafka's")) is None
    with pytest.raises(ValueError), kafka.translated():
        raise ValueError("not Kafka's")
