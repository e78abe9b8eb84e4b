"""Read every message of a test topic back (to see what reached Kafka, phantoms included)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition

from kafkastore import codec
from kafkastore.codec import WireEvent
from kafkastore.config import Settings


def read_topic(settings: Settings, timeout: float = 20.0) -> list[WireEvent]:
    """All decodable messages currently in the topic, per partition in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(settings.topic, timeout=timeout)
        partitions = sorted(metadata.topics[settings.topic].partitions)
        ends = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic, p), timeout=timeout
            )
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(settings.topic, p, low))
        consumer.assign(assignment)
        out: list[WireEvent] = []
        done: set[int] = set()
        while len(done) < len(ends):
            msg = consumer.poll(timeout)
            assert msg is not None, f"timed out reading {settings.topic}"
            assert msg.error() is None, msg.error()
            p, offset = msg.partition(), msg.offset()
            assert p is not None and offset is not None
            out.append(codec.decode(msg))
            if offset + 1 >= ends[p]:
                done.add(p)
        return out
    finally:
        consumer.close()
