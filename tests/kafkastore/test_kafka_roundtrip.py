"""The broker itself, through a client we did not write: what every other test stands on."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, Producer

from kafkastore.config import Settings
from tests.support import unique


def test_a_message_with_headers_round_trips_through_the_broker(settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka, "enable.idempotence": True})
    headers = [("ce_id", b"0190f1b2-0000-7000-8000-000000000001"), ("ce_type", b"Tested")]
    reports: list[tuple[KafkaError | None, int]] = []
    producer.produce(
        settings.topic,
        key=b"Order-1",
        value=b'{"total":12}',
        headers=headers,
        on_delivery=lambda err, msg: reports.append((err, msg.partition())),
    )
    assert producer.flush(15) == 0
    assert reports and reports[0][0] is None

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": unique("roundtrip"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([settings.topic])
        message = None
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        assert message.key() == b"Order-1"
        assert message.value() == b'{"total":12}'
        assert message.headers() == headers
        assert message.partition() == reports[0][1]
    finally:
        consumer.close()
