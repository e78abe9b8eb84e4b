"""Which xids PostgreSQL handed out twice, as the writer's messages in Kafka tell it.

Every message the writer produces names its transaction: ``ce_pgwrite`` (the write id, one per
transaction) and ``ce_pgxid`` (its xid). Two transactions with one xid mean PostgreSQL handed
the xid out again: the first one's WAL never reached disk before a crash, so recovery set the
xid counter back below it. That first transaction cannot have committed (its commit record
would have carried the counter past its xid), so its messages must be phantoms for every
reader, while the second one's are judged by their own marker like any other.

:class:`TopicScan` reads the run's topic from given offsets to its current end (again and
again, each call going on where the last stopped); :func:`reissued` finds the xids of two
transactions among the messages read, earliest transaction first (by the messages' timestamps:
one machine, one clock).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from confluent_kafka import TopicPartition

from consumers import groups
from kafkastore import codec, kafka
from kafkastore.config import Settings

TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the writer: its transaction and where it is in the log."""

    xid: int
    write_id: UUID
    event_id: UUID
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Reissue:
    """One xid two transactions had: ``before`` the crash (lost: never committed), ``after``."""

    xid: int
    before: list[Message]
    after: list[Message]


def high_watermarks(settings: Settings) -> dict[int, int]:
    """The next offset of every partition of the run's topic."""
    marks = groups.watermarks(settings, settings.topic, timeout=TIMEOUT)
    return {p: high for p, (_low, high) in marks.items()}


class TopicScan:
    """The writer's messages of ``settings.topic`` from ``start`` (partition -> offset) on."""

    def __init__(self, settings: Settings, start: dict[int, int]) -> None:
        self.settings = settings
        self.next = dict(start)
        self._consumer = kafka.consumer(settings, f"{settings.indexer_group}-verify-xids")
        with kafka.translated():
            self._consumer.assign(
                [TopicPartition(settings.topic, p, o) for p, o in sorted(start.items())]
            )

    def read(self) -> list[Message]:
        """The messages from where the last call stopped up to the end of each partition as it
        is now (a message that is not one of ours is skipped)."""
        target = high_watermarks(self.settings)
        out: list[Message] = []
        deadline = time.monotonic() + 60.0
        with kafka.translated():
            while (
                any(self.next.get(p, 0) < end for p, end in target.items())
                and time.monotonic() < deadline
            ):
                for m in self._consumer.consume(1000, timeout=1.0):
                    if m.error() is not None:
                        continue
                    self.next[m.partition() or 0] = (m.offset() or 0) + 1
                    try:
                        e = codec.decode(m)  # type: ignore[arg-type]
                    except codec.MalformedMessage:
                        continue
                    out.append(
                        Message(e.xid, e.write_id, e.event_id, e.partition, e.offset, _ms(m))
                    )
        return out

    def close(self) -> None:
        self._consumer.close()


def _ms(message: object) -> int:
    kind_and_ms = message.timestamp()  # type: ignore[attr-defined]
    return int(kind_and_ms[1])


def reissued(messages: Iterable[Message]) -> list[Reissue]:
    """The xids that two (or more) transactions carried, by xid; each transaction's messages
    as read, the earliest transaction ``before``, the others ``after``."""
    by_xid: dict[int, dict[UUID, list[Message]]] = {}
    for m in messages:
        by_xid.setdefault(m.xid, {}).setdefault(m.write_id, []).append(m)
    out = []
    for xid, writes in sorted(by_xid.items()):
        if len(writes) < 2:
            continue
        ordered = sorted(writes.values(), key=lambda ms: min(m.timestamp_ms for m in ms))
        out.append(Reissue(xid, ordered[0], [m for ms in ordered[1:] for m in ms]))
    return out
