"""What the consumer runtime hands to a handler: per-partition batches of judged messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Protocol, runtime_checkable

import psycopg
from confluent_kafka import Message

from kafkastore.codec import WireEvent
from kafkastore.records import RecordedEvent
from kafkastore.verdict import PhantomReason

__all__ = ["BatchHandler", "PartitionBatch", "PhantomRecord", "StagedHandler"]


class PhantomRecord(NamedTuple):
    """A message of the topic that is not a real event (never handed to a handler)."""

    partition: int
    """Kafka partition of the message."""
    offset: int
    """Kafka offset of the message."""
    event: WireEvent | None
    """The decoded event, or None when the message could not be decoded."""
    reason: PhantomReason
    """Why it is not real (no marker, another cluster, malformed, ...)."""


@dataclass(frozen=True)
class PartitionBatch:
    """The settled messages of one partition from one poll, in offset order."""

    topic: str
    """The events topic."""
    partition: int
    """Kafka partition of every message of the batch."""
    first_offset: int
    """Offset the batch starts at (what the stored checkpoint must equal)."""
    next_offset: int
    """Offset to store after applying it (last settled message + 1)."""
    wire: tuple[WireEvent, ...]
    """Real events only, decoded from the wire, in offset order."""
    phantoms: tuple[PhantomRecord, ...]
    """Messages judged phantoms (or malformed), in offset order."""
    messages: tuple[Message, ...] = ()
    """The Kafka messages of ``wire`` (same order): key, value and headers as produced
    (dead letters copy them)."""

    @cached_property
    def events(self) -> tuple[RecordedEvent, ...]:
        """The real events as handlers get them (JSON payloads parsed), built on first use:
        the indexer copies the payload bytes and never asks for them."""
        return tuple(w.recorded() for w in self.wire)


BatchHandler = Callable[[psycopg.Connection, Sequence[PartitionBatch]], None]
"""``handler(conn, batches)``: runs in a transaction on ``conn``; must not commit it."""


@runtime_checkable
class StagedHandler(Protocol):
    """A :data:`BatchHandler` whose first and last statements ride in the exactly-once
    runtime's own round trips: :meth:`begin` queues statements right after the checkpoint
    locks (BEGIN's round trip), :meth:`end` queues statements before the checkpoints advance
    and COMMIT (the last round trip). Both run in pipeline mode: they queue, they read nothing.
    """

    def begin(self, conn: psycopg.Connection, batches: Sequence[PartitionBatch]) -> None:
        """Queue the transaction's first statements for ``batches`` (a superset of what
        ``__call__`` then gets: fenced partitions are dropped after the locks)."""

    def __call__(self, conn: psycopg.Connection, batches: Sequence[PartitionBatch]) -> None:
        """Handle the batches (the results of :meth:`begin`'s statements are readable)."""

    def end(self, conn: psycopg.Connection) -> None:
        """Queue the transaction's last statements (after a ``__call__``, or none at all
        when every partition was fenced)."""
