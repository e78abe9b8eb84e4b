"""What a :class:`~consumers.runtime.BatchLoop` reports: positions, lag, holds and rates.

The loop's thread updates these counters; ``stats()`` reads them from any thread (the metrics
scrape, the indexer's ticker, tests), so every access takes one lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.batches import PartitionBatch

__all__ = ["LoopStats"]

RATE_WINDOW = 10.0
"""Seconds of history behind ``events_per_second``."""


@dataclass(slots=True)
class _PartitionStats:
    position: int | None = None
    high_watermark: int | None = None
    events: int = 0
    phantoms: int = 0
    fenced: int = 0
    held_offset: int | None = None
    """Offset of the first PENDING message the partition is stopped at (None: not held)."""
    held_xid: int | None = None
    held_since: float = 0.0


class LoopStats:
    """The counters of one loop over ``topic`` for consumer group ``group``."""

    def __init__(self, *, group: str, topic: str) -> None:
        self.group = group
        self.topic = topic
        self.assigned: set[int] = set()
        """Partitions assigned to the loop. Changed only by the loop's thread (under the lock),
        so that thread reads it without the lock."""
        self._lock = threading.Lock()
        self._partitions: dict[int, _PartitionStats] = {}
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._events = 0
        self._phantoms = 0
        self._verdict_waits = 0
        self._batches = 0

    def on_assign(self, starts: Mapping[int, int | None]) -> None:
        """Partitions assigned, with the offset each starts at (None: Kafka's committed one)."""
        with self._lock:
            for p, start in starts.items():
                self.assigned.add(p)
                self._partitions.setdefault(p, _PartitionStats()).position = start

    def on_revoke(self, partitions: Iterable[int]) -> None:
        """Partitions taken away by a rebalance: forget them."""
        with self._lock:
            for p in partitions:
                self.assigned.discard(p)
                self._partitions.pop(p, None)

    def partitions(self) -> list[int]:
        """The partitions with counters (those assigned)."""
        with self._lock:
            return list(self._partitions)

    def high_watermark(self, partition: int, high: int) -> None:
        """The partition's high watermark as last seen (for the lag)."""
        with self._lock:
            st = self._partitions.get(partition)
            if st is not None:
                st.high_watermark = high

    def held(self, partition: int, offset: int, xid: int) -> None:
        """The partition waits at ``offset`` behind writer ``xid`` (the stuck-writer alarm)."""
        with self._lock:
            self._verdict_waits += 1
            st = self._partitions.setdefault(partition, _PartitionStats())
            if st.held_offset != offset:
                st.held_offset, st.held_xid, st.held_since = offset, xid, time.monotonic()

    def fenced(self, partition: int) -> None:
        """A batch of the partition was dropped: another instance moved its checkpoint on."""
        with self._lock:
            if partition in self._partitions:
                self._partitions[partition].fenced += 1

    def applied(self, batches: Sequence[PartitionBatch]) -> None:
        """One handled (and committed) set of batches."""
        now = time.monotonic()
        with self._lock:
            self._batches += 1
            for b in batches:
                st = self._partitions.setdefault(b.partition, _PartitionStats())
                st.position = b.next_offset
                if st.held_offset is not None and b.next_offset > st.held_offset:
                    st.held_offset, st.held_xid = None, None
                st.events += len(b.wire)
                st.phantoms += len(b.phantoms)
                self._events += len(b.wire)
                self._phantoms += len(b.phantoms)
            self._rate.append((now, self._events))

    def snapshot(self, *, running: bool) -> dict[str, Any]:
        """Per-partition position, high watermark, lag, totals and events/s."""
        now = time.monotonic()
        with self._lock:
            partitions = {}
            total_lag = 0
            for p, st in sorted(self._partitions.items()):
                lag = None
                if st.position is not None and st.high_watermark is not None:
                    lag = max(0, st.high_watermark - st.position)
                    total_lag += lag
                partitions[p] = {
                    "position": st.position,
                    "high_watermark": st.high_watermark,
                    "lag": lag,
                    "events": st.events,
                    "phantoms": st.phantoms,
                    "fenced": st.fenced,
                    "held_offset": st.held_offset,
                    "held_xid": st.held_xid,
                    "held_for": now - st.held_since if st.held_offset is not None else 0.0,
                }
            rate = 0.0
            recent = [(t, n) for t, n in self._rate if now - t <= RATE_WINDOW]
            if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
                rate = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
            return {
                "group": self.group,
                "topic": self.topic,
                "running": running,
                "assigned": sorted(self.assigned),
                "owned_partitions": len(self.assigned),
                "partitions": partitions,
                # None, not 0, while no partition is owned: nothing is consumed, lag is unknown.
                "lag": total_lag if self.assigned else None,
                "verdict_waits": self._verdict_waits,
                "events": self._events,
                "phantoms": self._phantoms,
                "batches": self._batches,
                "events_per_second": rate,
            }
