"""Prometheus metrics of the indexer and of the index API, in two registries.

- :data:`INDEXER_REGISTRY`: the ``kafkastore_indexer_*`` series, counted by the indexer process
  and served by it alone (:func:`serve_indexer_metrics`, on ``settings.metrics_port``; the dev
  stack turns it on and lists its URL in ``dev.json`` as ``indexer_metrics``). The API process
  never exports them: a counter it does not have would read 0, which is not the truth.
- The default registry (the API's ``/metrics``): read latencies and waits, the reads of the live
  subscriptions' readers (``kafkastore_sse_reads_total``), and the index lag
  seen from outside: :func:`register_api_collectors` adds a collector that compares the topic's
  high watermarks with ``index_checkpoints`` at scrape time (``kafkastore_index_lag_*``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kafkastore import kafka, pg
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError
from kafkastore.verdict import PhantomReason

logger = logging.getLogger("kafkastore.indexer")

INDEXER_REGISTRY = CollectorRegistry()
"""The indexer process's own series (and the usual process, platform and GC ones)."""
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    INDEXER_REGISTRY.register(_collector)

EVENTS_INDEXED = Counter(
    "kafkastore_indexer_events_indexed",
    "Real events written to the index by this process.",
    registry=INDEXER_REGISTRY,
)
DUPLICATES = Counter(
    "kafkastore_indexer_duplicates",
    "Real events absorbed because they were already indexed (re-delivery).",
    registry=INDEXER_REGISTRY,
)
PHANTOMS_SKIPPED = Counter(
    "kafkastore_indexer_phantoms_skipped",
    "Messages judged phantoms (never indexed), by reason.",
    ["reason"],
    registry=INDEXER_REGISTRY,
)
for _reason in PhantomReason:
    PHANTOMS_SKIPPED.labels(_reason.value)  # every reason is exported, 0 until one is seen
VERDICT_WAITS = Counter(
    "kafkastore_indexer_verdict_waits",
    "Times the indexer waited for a writer whose transaction was still in progress.",
    registry=INDEXER_REGISTRY,
)
BATCH_SECONDS = Histogram(
    "kafkastore_indexer_apply_seconds",
    "Time to apply one batch (the indexer's part of the transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=INDEXER_REGISTRY,
)
LAG_OFFSETS = Gauge(
    "kafkastore_indexer_lag_offsets",
    "Messages of the partition not yet indexed (high watermark - next offset).",
    ["partition"],
    registry=INDEXER_REGISTRY,
)
OWNED_PARTITIONS = Gauge(
    "kafkastore_indexer_owned_partitions",
    "Partitions of the topic this indexer process owns (0: it indexes nothing, whatever the lag "
    "gauges said before; their series are removed for partitions it does not own).",
    registry=INDEXER_REGISTRY,
)
LAG_SECONDS = Gauge(
    "kafkastore_indexer_lag_seconds",
    "Age of the newest event the last batch of the partition indexed, when it was indexed.",
    ["partition"],
    registry=INDEXER_REGISTRY,
)
READ_SECONDS = Histogram(
    "kafkastore_read_seconds",
    "Latency of index reads, including min_version waits.",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0),
)
READ_WAITS = Counter(
    "kafkastore_read_index_waits",
    "Times a read with min_version waited for the indexer (one per notification round).",
)
SSE_READS = Counter(
    "kafkastore_sse_reads",
    "Index reads of the live subscriptions' readers at the head (one per wake-up of a feed "
    "key: a commit that touched its stream or category, or any commit for $all).",
)

CHECKPOINTS = "SELECT partition, next_offset FROM index_checkpoints WHERE topic = %s"


class IndexLagCollector(Collector):
    """Index lag per partition seen from the API process, computed at scrape time (cached).

    ``kafkastore_index_lag_offsets`` = high watermark - ``index_checkpoints.next_offset``;
    ``kafkastore_index_lag_seconds`` = age of the oldest message not yet indexed (the Kafka
    timestamp of the message at ``next_offset``; 0 when nothing waits).
    """

    def __init__(self, settings: Settings, *, cache_for: float = 2.0, timeout: float = 2.0) -> None:
        self._settings = settings
        self._cache_for = cache_for
        self._timeout = timeout
        self._lock = threading.Lock()
        self._cached_at = 0.0
        self._lags: dict[int, tuple[int, float]] = {}
        self._consumer: Consumer | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families({})

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._families(self.lags())

    def lags(self) -> dict[int, tuple[int, float]]:
        """``{partition: (lag in offsets, lag in seconds)}``, measured at most every
        ``cache_for`` seconds; empty when Kafka or PostgreSQL cannot be asked."""
        with self._lock:
            if time.monotonic() - self._cached_at > self._cache_for:
                try:
                    self._lags = self._measure()
                except KafkaStoreError as exc:
                    logger.warning("cannot measure the index lag: %s", exc.message)
                    self._lags = {}
                self._cached_at = time.monotonic()
            return dict(self._lags)

    @staticmethod
    def _families(lags: dict[int, tuple[int, float]]) -> list[GaugeMetricFamily]:
        offsets = GaugeMetricFamily(
            "kafkastore_index_lag_offsets",
            "Messages of the partition not yet indexed (high watermark - indexed offset).",
            labels=["partition"],
        )
        seconds = GaugeMetricFamily(
            "kafkastore_index_lag_seconds",
            "Age of the oldest message of the partition not yet indexed (0 when none).",
            labels=["partition"],
        )
        for partition, (lag, age) in sorted(lags.items()):
            offsets.add_metric([str(partition)], lag)
            seconds.add_metric([str(partition)], age)
        return [offsets, seconds]

    def _measure(self) -> dict[int, tuple[int, float]]:
        settings = self._settings
        if self._consumer is None:
            self._consumer = kafka.consumer(settings, f"{settings.indexer_group}-lag-probe")
        consumer = self._consumer
        with pg.connect(settings.database_url, autocommit=True) as conn, pg.translated():
            stored: dict[int, int] = dict(conn.execute(CHECKPOINTS, (settings.topic,)).fetchall())
        with kafka.translated():
            metadata = consumer.list_topics(settings.topic, timeout=self._timeout)
            partitions = sorted(metadata.topics[settings.topic].partitions)
            lags: dict[int, tuple[int, float]] = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(settings.topic, p), timeout=self._timeout
                )
                next_offset = int(stored.get(p, low))
                lag = max(0, high - next_offset)
                lags[p] = (lag, self._age(consumer, p, next_offset) if lag else 0.0)
            return lags

    def _age(self, consumer: Consumer, partition: int, offset: int) -> float:
        consumer.assign([TopicPartition(self._settings.topic, partition, offset)])
        message = consumer.consume(1, timeout=self._timeout)
        if not message or message[0].error() is not None:
            return 0.0
        _kind, millis = message[0].timestamp()
        return max(0.0, datetime.now(UTC).timestamp() - float(millis) / 1000.0)


def serve_indexer_metrics(settings: Settings) -> Any:
    """Serve :data:`INDEXER_REGISTRY` at ``http://<metrics_host>:<metrics_port>/metrics``
    (127.0.0.1 unless configured); returns the server (``shutdown()`` stops it)."""
    server, _thread = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=INDEXER_REGISTRY
    )
    logger.info(
        "indexer metrics on http://%s:%s/metrics", settings.metrics_host, settings.metrics_port
    )
    return server


_registered: list[IndexLagCollector] = []


def register_api_collectors(settings: Settings) -> None:
    """Add the index-lag collector to the default registry (once per process)."""
    if _registered:
        return
    _registered.append(IndexLagCollector(settings))
    REGISTRY.register(_registered[0])
