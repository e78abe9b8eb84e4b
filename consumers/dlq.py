"""Dead letters: events a handler kept failing on, copied to ``<topic>.dlq`` so the group moves on.

A dead letter is the original message - same key, value and headers, so any tool that reads the
events topic reads it too - plus ``kafkastore_error`` (the exception, one line),
``kafkastore_group`` (the consumer group that gave up), ``kafkastore_attempts`` and the origin
(``kafkastore_topic``, ``kafkastore_partition``, ``kafkastore_offset``). The topic is created
when missing with the events topic's configuration (never compacted, kept forever) and the
same partition count, so a stream's dead letters stay in order on one partition.

Sending waits for the broker's ack before the subscription moves past the event: a crash after
that may dead-letter the event twice (re-delivery), never zero times.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import Message, Producer

from kafkastore import kafka, topic
from kafkastore.config import Settings
from kafkastore.errors import Unavailable

logger = logging.getLogger("kafkastore.consumers")

DLQ_SUFFIX = ".dlq"
MAX_ERROR_BYTES = 4096


def dlq_topic(events_topic: str) -> str:
    """The dead-letter topic of an events topic: ``<events_topic>.dlq``."""
    return events_topic + DLQ_SUFFIX


class DeadLetters:
    """Producer of one group's dead letters. Thread-safe; created lazily on the first letter."""

    def __init__(self, settings: Settings, *, group: str, timeout: float = 30.0) -> None:
        self.settings = settings
        self.group = group
        self.topic = dlq_topic(settings.topic)
        self.timeout = timeout
        self.sent = 0
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Producer:
        if self._producer is None:
            events = topic.describe_topic(self.settings)
            like = self.settings.replace(topic=self.topic)
            if events is not None:
                like = like.replace(
                    partitions=events.partitions, replication_factor=events.replication_factor
                )
            # Created with topic_config(), like the events topic; an existing one is verified.
            topic.ensure_topic(like)
            partitions = like.partitions
            logger.info(
                "dead letters of group %r go to %r (%s partitions)",
                self.group,
                self.topic,
                partitions,
            )
            self._producer = kafka.producer(self.settings)
        return self._producer

    def send(self, message: Message, error: BaseException, attempts: int) -> None:
        """Copy ``message`` to the dead-letter topic with the error headers; wait for the ack."""
        with self._lock:
            producer = self._ensure()
            original = message.headers() or []
            headers: list[tuple[str, str | bytes | None]] = list(
                original.items() if isinstance(original, dict) else original
            )
            headers += [
                ("kafkastore_error", _describe(error)),
                ("kafkastore_group", self.group.encode()),
                ("kafkastore_attempts", str(attempts).encode()),
                ("kafkastore_topic", (message.topic() or "").encode()),
                ("kafkastore_partition", str(message.partition()).encode()),
                ("kafkastore_offset", str(message.offset()).encode()),
            ]
            failures: list[Any] = []

            def report(err: Any, _msg: Message) -> None:
                if err is not None:
                    failures.append(err)

            with kafka.translated():
                producer.produce(
                    self.topic,
                    key=message.key(),
                    value=message.value(),
                    headers=headers,
                    on_delivery=report,
                )
                remaining = producer.flush(self.timeout)
            if remaining or failures:
                raise Unavailable(
                    f"could not dead-letter {message.partition()}/{message.offset()} to "
                    f"{self.topic!r}: {failures or 'timed out'}"
                )
            self.sent += 1

    def close(self) -> None:
        """Flush and drop the producer (a later :meth:`send` creates a new one)."""
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None


def _describe(error: BaseException) -> bytes:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text.encode("utf-8", "replace")[:MAX_ERROR_BYTES]
