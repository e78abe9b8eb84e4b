"""The writer's Python cost per produced event, without Kafka: step 4 of the append protocol
(:func:`writer.produce.produce_and_await`) against a producer that only counts and acknowledges.

``python -m bench.profiles.writer_encode [--events N] [--per-append K]`` prints µs of CPU
(``time.process_time``) per event for the headers and the produce loop; the broker, the database
and the HTTP layer are not in it, so the figure moves with the code, not with the machine's load.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from bench.payload import EVENT_TYPE, event_data
from writer.decide import Accepted, Decision, MarkerRow
from writer.prepare import PreparedAppend, PreparedEvent
from writer.produce import Stamp, produce_and_await


class _Message:
    __slots__ = ("_key", "_offset")

    def __init__(self, key: bytes, offset: int) -> None:
        self._key, self._offset = key, offset

    def key(self) -> bytes:
        return self._key

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0


class _Producer:
    """Acknowledges every message at once (on the caller's thread)."""

    def __init__(self) -> None:
        self.offset = 0

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        *,
        headers: Any,
        timestamp_ms: int,
        on_delivery: Callable[[Any, Any], None],
    ) -> None:
        self.offset += 1
        on_delivery(None, _Message(key, self.offset))

    def flush_hint(self) -> None:
        pass


def _decision(appends: int, per_append: int) -> Decision:
    accepted = []
    markers = []
    start = 0
    for a in range(appends):
        events = tuple(
            PreparedEvent(
                id=uuid.uuid4(),
                type=EVENT_TYPE,
                payload=orjson.dumps(event_data(a * per_append + i)),
                content_type="application/json",
                metadata=None,
                metadata_json=None,
            )
            for i in range(per_append)
        )
        stream = f"bench-{a:05d}"
        append = PreparedAppend(stream, "any", events, False, sum(len(e.payload) for e in events))
        accepted.append(Accepted(append=append, from_version=1, start=start))
        markers.append(MarkerRow(stream, 1, per_append, start, per_append))
        start += per_append
    heads = {m.stream_id: m.to_version for m in markers}
    return Decision(
        units=(),
        accepted=tuple(accepted),
        produce_order=tuple(accepted),
        markers=tuple(markers),
        heads=heads,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles.writer_encode")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-append", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500, help="appends per writer batch")
    args = parser.parse_args(argv)
    decision = _decision(args.batch, args.per_append)
    producer = _Producer()
    stamp = Stamp(topic="t", source="kafkastore://local", sysid="7", write_id=uuid.uuid4(), xid=9)
    batches = max(1, args.events // decision.event_count)
    started = time.process_time()
    for _ in range(batches):
        produce_and_await(producer, decision, stamp, timeout=1.0)  # type: ignore[arg-type]
    spent = time.process_time() - started
    events = batches * decision.event_count
    print(f"{spent / events * 1e6:.2f} µs of CPU per event ({events:,} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
