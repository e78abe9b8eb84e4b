"""One poll's messages -> per-partition batches of settled messages (step 2 of the runtime).

Decode every message, judge the decoded ones with the kernel's verdict rule (one marker query
per batch in the common case, waiting at most ``timeout`` while a writer may still run), then
cut each partition's messages before its first PENDING one: nothing past an unsettled message
is handed on, and the caller re-fetches the partition from there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import psycopg
from confluent_kafka import Message

from consumers.batches import PartitionBatch, PhantomRecord
from kafkastore import codec
from kafkastore.codec import WireEvent
from kafkastore.verdict import PhantomReason, Verdict, VerdictResolver

__all__ = ["Held", "Judged", "judge"]

logger = logging.getLogger("kafkastore.consumers")

# Members bound once: an Enum member looked up on its class runs Python code (enum.property)
# each time, and these are compared once per message.
_PENDING, _REAL = Verdict.PENDING, Verdict.REAL


class Held(NamedTuple):
    """A partition stopped before a message whose writer may still commit."""

    partition: int
    offset: int
    """The PENDING message: where the partition must be fetched again."""
    xid: int
    """The writer's transaction id (for the stuck-writer alarm)."""


class Judged(NamedTuple):
    """What :func:`judge` made of one poll."""

    batches: list[PartitionBatch]
    """One batch per partition that has settled messages, in the order given."""
    held: list[Held]
    """The partitions stopped before a PENDING message."""


def _offset(msg: Message) -> int:
    offset = msg.offset()
    assert offset is not None  # only error messages have none, and those were filtered out
    return offset


def judge(
    resolver: VerdictResolver,
    conn: psycopg.Connection,
    topic: str,
    by_partition: Mapping[int, Sequence[Any]],
    positions: Mapping[int, int],
    *,
    timeout: float,
) -> Judged:
    """Batches of ``by_partition`` (each partition's Kafka messages, in offset order); a batch
    starts at ``positions[p]`` when known, else at its first message."""
    decoded: dict[int, list[WireEvent | None]] = {}
    wires: list[WireEvent] = []
    starts: dict[int, int] = {}
    for p, msgs in by_partition.items():
        starts[p] = len(wires)
        row: list[WireEvent | None] = []
        for msg in msgs:
            try:
                event = codec.decode(msg)
            except codec.MalformedMessage as exc:
                logger.error(
                    "message %s/%s of %r is not a kafkastore event: %s", p, msg.offset(), topic, exc
                )
                row.append(None)
                continue
            row.append(event)
            wires.append(event)
        decoded[p] = row
    judgements = resolver.judge_until_settled(conn, wires, timeout=timeout)
    batches: list[PartitionBatch] = []
    held: list[Held] = []
    for p, msgs in by_partition.items():
        real: list[WireEvent] = []
        real_messages: list[Message] = []
        phantoms: list[PhantomRecord] = []
        # This partition's judgements, in the order its decoded messages meet them again.
        verdicts = iter(judgements[starts[p] :])
        first = positions.get(p, _offset(msgs[0]))
        next_offset = first
        for msg, wire in zip(msgs, decoded[p], strict=True):
            offset = _offset(msg)
            if wire is None:
                phantoms.append(PhantomRecord(p, offset, None, PhantomReason.MALFORMED))
            else:
                judgement = next(verdicts)
                if judgement.verdict is _PENDING:
                    # Never move past a message whose writer may still commit.
                    held.append(Held(p, offset, wire.xid))
                    break
                if judgement.verdict is _REAL:
                    real.append(wire)
                    real_messages.append(msg)
                else:
                    assert judgement.reason is not None
                    phantoms.append(PhantomRecord(p, offset, wire, judgement.reason))
            next_offset = offset + 1
        if next_offset == first:
            continue
        batches.append(
            PartitionBatch(
                topic=topic,
                partition=p,
                first_offset=first,
                next_offset=next_offset,
                wire=tuple(real),
                phantoms=tuple(phantoms),
                messages=tuple(real_messages),
            )
        )
    return Judged(batches, held)
