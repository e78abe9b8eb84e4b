"""Prometheus metrics of subscriptions, read from their ``stats()`` at scrape time.

Nothing is counted on the hot path: a collector asks every live subscription of the process for
its statistics when Prometheus scrapes. Metric names (labels ``group``, ``topic``, and
``partition`` where per partition):

- ``kafkastore_subscription_position`` - next offset the group will handle
- ``kafkastore_subscription_high_watermark`` - the partition's end offset
- ``kafkastore_subscription_lag`` - high watermark minus position
- ``kafkastore_subscription_events_total`` - events handled (after filters: delivered or skipped)
- ``kafkastore_subscription_phantoms_total`` - messages judged phantoms, never delivered
- ``kafkastore_subscription_fenced_total`` - batches dropped because another instance moved on
- ``kafkastore_subscription_delivered_total`` - events given to the handler (group-wide)
- ``kafkastore_subscription_retries_total`` / ``..._dead_letters_total`` (group-wide)
- ``kafkastore_subscription_events_per_second`` - recent throughput (group-wide)
- ``kafkastore_subscription_owned_partitions`` - partitions this process owns; 0 while the group
  rebalances or other members hold them (there are no per-partition series then, not lag 0)
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("kafkastore.consumers")

StatsSource = Callable[[], dict[str, Any]]

_PER_PARTITION = (
    ("position", "gauge", "Next offset the group will handle"),
    ("high_watermark", "gauge", "End offset of the partition"),
    ("lag", "gauge", "High watermark minus position"),
    ("events", "counter", "Real events handled (delivered or filtered out)"),
    ("phantoms", "counter", "Messages judged phantoms (never delivered)"),
    ("fenced", "counter", "Batches dropped because another instance moved on"),
)
_PER_GROUP = (
    ("delivered", "counter", "Events given to the handler"),
    ("retries", "counter", "Handler attempts that failed and were retried"),
    ("dead_letters", "counter", "Events sent to the dead-letter topic"),
    ("events_per_second", "gauge", "Recent throughput of the group"),
    ("owned_partitions", "gauge", "Partitions this process owns (0: it handles nothing)"),
)


class _SubscriptionCollector(Collector):
    def __init__(self) -> None:
        self._sources: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, owner: Any) -> None:
        """``owner`` has a ``stats()`` method; it is forgotten when garbage-collected."""
        with self._lock:
            self._sources.add(owner)

    def discard(self, owner: Any) -> None:
        with self._lock:
            self._sources.discard(owner)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self._lock:
            owners = list(self._sources)
        stats = [owner.stats() for owner in owners]
        for name, kind, doc in _PER_PARTITION:
            family = _family(name, kind, doc, ["group", "topic", "partition"])
            for s in stats:
                for partition, values in s.get("partitions", {}).items():
                    value = values.get(name)
                    if value is not None:
                        family.add_metric([s["group"], s["topic"], str(partition)], value)
            yield family
        for name, kind, doc in _PER_GROUP:
            family = _family(name, kind, doc, ["group", "topic"])
            for s in stats:
                if s.get(name) is not None:
                    family.add_metric([s["group"], s["topic"]], s[name])
            yield family


def _family(
    name: str, kind: str, doc: str, labels: list[str]
) -> GaugeMetricFamily | CounterMetricFamily:
    full = f"kafkastore_subscription_{name}"
    if kind == "counter":
        # prometheus_client appends _total to counters itself.
        return CounterMetricFamily(full, doc, labels=labels)
    return GaugeMetricFamily(full, doc, labels=labels)


COLLECTOR = _SubscriptionCollector()
REGISTRY.register(COLLECTOR)

_servers: dict[int, Any] = {}
_servers_lock = threading.Lock()


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose the default registry on ``host:port`` (once per process and port); loopback
    unless told otherwise (``metrics_host``)."""
    with _servers_lock:
        if port in _servers:
            return
        _servers[port] = start_http_server(port, addr=host)
        logger.info("subscription metrics on http://%s:%s/metrics", host, port)
