"""What every workload gets: the environment, the timing, the progress display, earlier results,
and the in-process stores (opened once, on first use)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import TopicPartition
from rich.progress import Progress

from bench.drive import Probe, Timing
from bench.environment import Environment
from kafkastore import kafka, pg
from kafkastore.client import AsyncEventStore, EventStore
from kafkastore.config import Settings

T = TypeVar("T")

PRODUCERS = 8
"""Concurrent producers of every append workload (issue 6)."""
DEPTH = 8
"""Appends in flight per producer in the ``*_pipelined`` variants."""
STREAMS = 1000


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (cheaper clients), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass(slots=True)
class Context:
    env: Environment
    timing: Timing
    quick: bool
    progress: Progress
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    _store: EventStore | None = None
    _astore: AsyncEventStore | None = None

    @property
    def settings(self) -> Settings:
        return self.env.settings

    def roles(self, **extra: int | None) -> dict[str, int | None]:
        return {
            "kafka": self.env.kafka_pid,
            "postgresql": self.env.postgres_pid,
            "bench": os.getpid(),
            "api": self.env.api.pid if self.env.api else None,
            "indexer": self.env.indexer.pid if self.env.indexer else None,
            **extra,
        }

    def probe(self, *rss: str, **extra_roles: int | None) -> Probe:
        return Probe(self.roles(**extra_roles), rss)

    def store(self) -> EventStore:
        if self._store is None:
            self._store = EventStore(self.settings).open()
        return self._store

    def astore(self) -> AsyncEventStore:
        """The asyncio store; its writer is threads, so it serves any event loop."""
        if self._astore is None:
            self._astore = AsyncEventStore(self.settings)
            self._astore.writer.open()
        return self._astore

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._astore is not None:
            self._astore.writer.close()
            self._astore = None

    def index_backlog(self, settings: Settings | None = None) -> int:
        """Messages of the topic the indexer has not yet passed (high watermarks - checkpoints)."""
        s = settings or self.settings
        consumer = kafka.consumer(s, f"bench-{self.env.run_id}-watermarks")
        try:
            metadata = consumer.list_topics(s.topic, timeout=10.0)
            partitions = list(metadata.topics[s.topic].partitions)
            high = {
                p: consumer.get_watermark_offsets(TopicPartition(s.topic, p), timeout=10.0)[1]
                for p in partitions
            }
        finally:
            consumer.close()
        with pg.connect(s.database_url, autocommit=True) as conn, pg.translated():
            rows = conn.execute(
                "SELECT partition, next_offset FROM index_checkpoints WHERE topic = %s",
                (s.topic,),
            ).fetchall()
        done = {int(p): int(o) for p, o in rows}
        return sum(max(h - done.get(p, 0), 0) for p, h in high.items())

    def settle(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the indexer has caught up with the topic; how long it took, and what was
        left behind at the end of the workload (an indexer that keeps up leaves ~nothing)."""
        started = time.monotonic()
        backlog = first = self.index_backlog()
        while backlog and time.monotonic() - started < timeout:
            time.sleep(0.2)
            backlog = self.index_backlog()
        return {
            "index_backlog_at_end": first,
            "index_settle_s": round(time.monotonic() - started, 2),
            "index_backlog_after_settle": backlog,
        }
