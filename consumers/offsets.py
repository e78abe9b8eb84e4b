"""Offsets committed to Kafka by the consumer runtime (:mod:`consumers.runtime`).

At-least-once mode commits each batch's offsets synchronously after its handler: they are the
position. Exactly-once mode stores positions in PostgreSQL and commits them to Kafka only for
lag tooling: asynchronously, at most every :data:`KAFKA_COMMIT_INTERVAL` while batches keep
coming, and at once when the loop goes idle, loses partitions or stops - an offset commit per
tiny batch is what the broker spent most of its CPU on at light load.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, TopicPartition

from kafkastore import kafka
from kafkastore.errors import KafkaStoreError

logger = logging.getLogger("kafkastore.consumers")

KAFKA_COMMIT_INTERVAL = 1.0
"""Exactly-once mode: the longest the lag-only Kafka offsets trail the stored checkpoints
while batches keep coming (seconds); an idle loop commits what is left at once."""


class KafkaOffsets:
    """The offsets of one loop's group on ``topic``."""

    def __init__(self, group: str, topic: str) -> None:
        self.group = group
        self.topic = topic
        self._pending: dict[int, int] = {}
        self._last = 0.0

    def stored(self, consumer: Consumer, next_offsets: dict[int, int]) -> None:
        """Exactly-once mode: these positions are in PostgreSQL; tell Kafka when it is time."""
        self._pending.update(next_offsets)
        if time.monotonic() - self._last >= KAFKA_COMMIT_INTERVAL:
            self.flush(consumer)

    def flush(self, consumer: Consumer) -> None:
        """Commit (asynchronously) what :meth:`stored` has not sent yet."""
        if not self._pending:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(self._pending.items())]
        self._pending.clear()
        self._last = time.monotonic()
        self.commit(consumer, offsets, asynchronous=True)

    def commit(
        self, consumer: Consumer, offsets: list[TopicPartition], *, asynchronous: bool
    ) -> None:
        """Commit ``offsets`` now; a failure (a rebalance racing with it) is logged."""
        try:
            with kafka.translated():
                if asynchronous:
                    consumer.commit(offsets=offsets, asynchronous=True)
                else:
                    consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaStoreError as exc:
            # A rebalance raced with the commit: the new owner re-delivers from the last
            # committed offset (at-least-once); the next commit of this loop covers the rest.
            logger.warning("group %r: offset commit failed: %s", self.group, exc)
