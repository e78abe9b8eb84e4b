"""One idempotent producer shared by every writer thread, and per-batch delivery tracking.

A poller thread serves librdkafka's delivery reports so that worker threads only wait on their
own batch. A batch succeeds only when every one of its messages has a successful report; any
failure or a missing report at the deadline fails the whole batch (the caller rolls back, and
whatever did land is a phantom: it has no marker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from kafkastore import kafka
from kafkastore.config import Settings
from kafkastore.errors import Unavailable

logger = logging.getLogger("kafkastore.writer")

Headers = list[tuple[str, str | bytes | None]]


class DeliveryTracker:
    """Collects the delivery reports of one batch.

    One bound callback serves every message of the batch (no closure per message on the hot
    path): a report names its message by key (the stream id) and the reports of one partition
    arrive in produce order (idempotent producer), so :meth:`resolve` can give each produced
    event its partition and offset from the stream's reports sorted by offset.
    """

    __slots__ = ("_done", "_lock", "error", "offsets", "partitions", "pending", "reports", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.pending = total
        self.reports: dict[bytes | None, list[tuple[int, int]]] = {}
        self.offsets: list[int] = []
        self.partitions: list[int] = []
        self.error: KafkaError | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        if total == 0:
            self._done.set()

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery callback (on the poller thread) for every message of the batch."""
        with self._lock:
            if err is not None:
                if self.error is None:
                    self.error = err
            else:
                key = msg.key()
                entry = (msg.offset() or 0, msg.partition() or 0)
                found = self.reports.get(key)
                if found is None:
                    self.reports[key] = [entry]
                else:
                    found.append(entry)
            self.pending -= 1
            if self.pending == 0 or err is not None:
                self._done.set()

    def wait(self, timeout: float) -> None:
        """Return when every report arrived successfully; raise Unavailable otherwise."""
        if not self._done.wait(timeout):
            raise Unavailable(
                f"Kafka did not acknowledge {self.pending} of {self.total} events in {timeout:.1f}s"
            )
        if self.error is not None:
            raise kafka.translate_error(self.error)

    def resolve(self, produced: list[tuple[bytes, int]]) -> None:
        """Fill ``offsets``/``partitions`` in produce order; ``produced`` lists (key, count) of
        each stream's contiguous run of messages, in produce order."""
        offsets, partitions = self.offsets, self.partitions
        for key, count in produced:
            entries = sorted(self.reports[key])
            if len(entries) != count:
                raise Unavailable(f"expected {count} reports for {key!r}, got {len(entries)}")
            for offset, partition in entries:
                offsets.append(offset)
                partitions.append(partition)


class SharedProducer:
    """The writer's producer: idempotent, acks=all, murmur2_random; replaced on a fatal error."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self._overrides = overrides
        self._lock = threading.Lock()
        self._replacing = False
        self._producer: Producer = self._new()
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafkastore-delivery", daemon=True)
        self._poller.start()

    def _new(self) -> Producer:
        return kafka.writer_producer(self._settings, error_cb=self._on_error, **self._overrides)

    def _on_error(self, err: KafkaError) -> None:
        if not err.fatal():
            logger.warning("Kafka: %s", err.str())
            return
        with self._lock:
            if self._replacing:  # one fatal error is reported many times
                return
            self._replacing = True
        logger.error("fatal producer error, replacing the producer: %s", err.str())
        threading.Thread(target=self._replace, name="kafkastore-replace", daemon=True).start()

    def _replace(self) -> None:
        """New appends go to a new producer; the old one is drained so that its in-flight
        batches get their (failed) delivery reports now instead of at their deadline."""
        with self._lock:
            old = self._producer
            self._producer = self._new()
        try:
            remaining = old.flush(self._settings.delivery_timeout)
            if remaining:
                logger.warning(
                    "%d messages of the replaced producer were never reported", remaining
                )
        finally:
            with self._lock:
                self._replacing = False

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        *,
        headers: Headers,
        timestamp_ms: int,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        """Hand one message to librdkafka, waiting while its local queue is full."""
        producer = self._producer
        while True:
            try:
                with kafka.translated():
                    producer.produce(
                        topic,
                        value=value,
                        key=key,
                        headers=headers,
                        timestamp=timestamp_ms,
                        on_delivery=on_delivery,
                    )
                return
            except BufferError:
                # librdkafka's local queue is full: wait for reports to drain it.
                producer.poll(0.01)

    def flush_hint(self) -> None:
        """Ask librdkafka to send what it has without waiting for linger.ms."""
        self._producer.poll(0)

    def close(self, timeout: float = 10.0) -> None:
        """Stop polling and flush what is queued; returns early when closed."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._poller.join(timeout)
        remaining = self._producer.flush(timeout)
        if remaining:
            logger.warning("%d messages were not delivered at close", remaining)
