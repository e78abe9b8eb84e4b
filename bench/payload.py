"""The workload's data: ~200-byte JSON events and streams owned by one producer each.

Every producer owns a disjoint set of streams, so it knows their versions and appends with exact
expected versions (a conflict would be a bug, and is counted as an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from kafkastore.records import ExpectedVersion

EVENT_TYPE = "OrderLineAdded"
_BASE: dict[str, Any] = {
    "order_id": "0190f1b2-7c3e-7a10-9d4f-5b8e2c1a9f03",
    "customer_id": "C-004217",
    "sku": "SKU-88120-M",
    "quantity": 3,
    "unit_price": "19.99",
    "currency": "EUR",
    "warehouse": "DE-FRA-2",
    "note": "gift wrap",
}


def event_data(seq: int) -> dict[str, Any]:
    """One event's data: ~200 bytes as compact JSON."""
    return {**_BASE, "seq": seq}


def event_size() -> int:
    return len(orjson.dumps(event_data(1_000_000)))


def stream_ids(prefix: str, count: int) -> list[str]:
    """``<prefix>-0000`` ...: one category per workload (the part before the first ``-``)."""
    return [f"{prefix}-{i:04d}" for i in range(count)]


@dataclass(slots=True)
class OwnedStreams:
    """A producer's streams and their versions, handed out round-robin."""

    streams: list[str]
    versions: dict[str, int] = field(default_factory=dict)
    _next: int = 0
    busy: set[str] = field(default_factory=set)

    def take(self) -> tuple[str, int]:
        """The next stream not in flight, and its current version (0 = no stream yet)."""
        for _ in range(len(self.streams)):
            stream = self.streams[self._next]
            self._next = (self._next + 1) % len(self.streams)
            if stream not in self.busy:
                self.busy.add(stream)
                return stream, self.versions.get(stream, 0)
        raise RuntimeError("every stream of this producer is in flight")

    def done(self, stream: str, new_version: int | None) -> None:
        self.busy.discard(stream)
        if new_version is not None:
            self.versions[stream] = new_version


def split(streams: list[str], owners: int) -> list[OwnedStreams]:
    return [OwnedStreams(streams[i::owners]) for i in range(owners)]


def expected(version: int) -> ExpectedVersion:
    """The exact expected version: ``"no_stream"`` for a new stream (docs/http.md)."""
    return version if version else "no_stream"
