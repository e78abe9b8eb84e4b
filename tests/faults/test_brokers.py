"""Broker faults in the replicated topology (three nodes, RF=3, ``min.insync.replicas=2``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from dev.kafka_cluster import KafkaCluster
from kafkastore import kafka
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError
from kafkastore.records import AppendResult, NewEvent
from tests.support import unique
from tests.support.process import ServiceProcess

pytestmark = pytest.mark.slow


def _leader(settings: Settings, partition: int) -> int:
    with kafka.translated():
        metadata = kafka.admin(settings).list_topics(settings.topic, timeout=10.0)
    return int(metadata.topics[settings.topic].partitions[partition].leader)


def test_killing_the_partition_leader_while_appends_run_loses_no_acknowledged_append(
    kafka_cluster: KafkaCluster,
    replicated_settings: Callable[..., Settings],
    indexer_server: Callable[..., ServiceProcess],
) -> None:
    settings = replicated_settings()
    streams = [unique("Hot") for _ in range(4)]
    acked: list[AppendResult] = []
    timed: list[tuple[float, AppendResult]] = []  # (when acknowledged, what)
    failed: list[str] = []
    stop = threading.Event()

    with EventStore.connect(settings=settings) as store:

        def append_until_stopped(stream: str) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    result = store.append(stream, [NewEvent(type="Tick", data={"n": n})], "any")
                    acked.append(result)
                    timed.append((time.monotonic(), result))
                except KafkaStoreError as exc:  # unavailable while the leader moves: allowed
                    failed.append(exc.message)
                    time.sleep(0.05)

        writers = [threading.Thread(target=append_until_stopped, args=(s,)) for s in streams]
        for w in writers:
            w.start()
        try:
            while len(acked) < 50:
                time.sleep(0.05)
            partition = acked[0].events[0].partition
            victim = _leader(settings, partition)
            kafka_cluster.kill(victim)
            killed, killed_at = time.monotonic(), len(acked)
            deadline = time.monotonic() + 60.0
            # Appends go on with two of three replicas in sync.
            while len(acked) < killed_at + 50 or not any(
                r.events[0].partition == partition for r in acked[killed_at:]
            ):
                assert time.monotonic() < deadline, f"appends did not resume: {failed[-3:]}"
                time.sleep(0.05)
        finally:
            stop.set()
            for w in writers:
                w.join(60)
        # Appends to the partition the dead node led resume once the controller elected a new
        # leader: the first acknowledgement on it after the kill measures the failover.
        resumed = min(t for t, r in timed if t > killed and r.events[0].partition == partition)
        print(
            f"leader {victim} of partition {partition} killed: appends resumed after "
            f"{resumed - killed:.2f}s"
        )
        assert resumed - killed < 30.0
        indexer_server(settings, ready_line="indexer started")
        for stream in streams:
            mine = [r for r in acked if r.stream_id == stream]
            wanted = {e.id for r in mine for e in r.events}
            head = max(r.to_version for r in mine)
            deadline = time.monotonic() + 60.0
            while True:
                page = store.read_stream(stream, from_version=1, limit=10_000)
                if len(page.events) >= head or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            read = [e.id for e in page.events]
            # Every acknowledged event readable exactly once, versions contiguous.
            assert wanted <= set(read)
            assert len(read) == len(set(read))
            assert [e.version for e in page.events] == list(range(1, len(read) + 1))
