"""Step 4 of the append protocol: produce a decided batch and await every delivery report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from kafkastore.codec import HeaderStamp, format_time
from writer import faults
from writer.decide import Decision, Delivered
from writer.delivery import DeliveryTracker, SharedProducer


@dataclass(frozen=True, slots=True, kw_only=True)
class Stamp:
    """What every message of one batch carries besides its event (the ``ce_pg*`` headers)."""

    topic: str
    source: str
    sysid: str
    """This cluster's system identifier (``ce_pgsysid``)."""
    write_id: UUID
    """The batch's commit marker (``ce_pgwrite``)."""
    xid: int
    """The batch's transaction id (``ce_pgxid``)."""


def produce_and_await(
    producer: SharedProducer, decision: Decision, stamp: Stamp, *, timeout: float
) -> Delivered:
    """Produce every accepted event in produce order; return when Kafka acknowledged them all.

    Raises Unavailable when any report failed or is missing after ``timeout``: the caller rolls
    back, and whatever landed is a phantom (no marker).
    """
    tracker = DeliveryTracker(decision.event_count)
    now = format_time(datetime.now(UTC))
    timestamp_ms = int(time.time() * 1000)
    shared = HeaderStamp(
        source=stamp.source,
        time=now,
        write_id=str(stamp.write_id),
        xid=stamp.xid,
        sysid=stamp.sysid,
    )
    # Bound once: this loop is hot.
    send, on_delivery, headers_of = producer.produce, tracker.report, shared.headers
    topic = stamp.topic
    for accepted in decision.produce_order:
        append = accepted.append
        key = append.stream_id.encode()
        version = accepted.from_version
        for event in append.events:
            send(
                topic,
                key,
                event.payload,
                headers=headers_of(
                    event_id=event.id,
                    event_type=event.type,
                    subject=key,
                    version=version,
                    content_type=event.content_type,
                    metadata=event.metadata,
                    metadata_json=event.metadata_json,
                ),
                timestamp_ms=timestamp_ms,
                on_delivery=on_delivery,
            )
            version += 1
    producer.flush_hint()
    faults.step("produced")
    tracker.wait(timeout)
    # Each marker row is one stream's contiguous run of messages, in produce order.
    tracker.resolve([(row.stream_id.encode(), row.count) for row in decision.markers])
    return Delivered(stamp.write_id, tracker.partitions, tracker.offsets)
