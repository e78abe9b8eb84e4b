"""Frozen value types shared by every role (hot paths create millions of them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias
from uuid import UUID

from kafkastore.streams import category_of

ExpectedVersion: TypeAlias = int | Literal["any", "no_stream", "exists"]
"""``"any"`` (default), ``"no_stream"`` or ``0``, ``"exists"``, or an exact version N >= 1."""

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append."""

    type: str
    """Event type, 1-256 characters without control characters."""
    data: Any = None
    """JSON-serialisable value, or ``bytes`` (then ``content_type`` says what they are)."""
    metadata: dict[str, Any] | None = None
    """Optional JSON object; ``correlation_id``/``causation_id``/``traceparent`` become headers."""
    id: UUID | None = None
    """Event id; generated (time-ordered) when absent. Reusing it makes retries idempotent."""
    content_type: str | None = None
    """Content type of ``data`` when it is bytes; JSON otherwise."""


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One stream's part of an append (an atomic multi-stream append has several)."""

    stream_id: str
    events: tuple[NewEvent, ...]
    expected_version: ExpectedVersion = "any"


@dataclass(frozen=True, slots=True)
class EventPosition:
    """Where one appended event landed."""

    id: UUID
    version: int
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of one stream's append."""

    stream_id: str
    from_version: int
    to_version: int
    events: tuple[EventPosition, ...]
    created: bool = True
    """False when this was an idempotent repeat of an earlier, committed append (HTTP 200)."""
    write_id: UUID | None = None
    """The commit marker of the write that stored these events."""

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "events": [
                {
                    "id": str(e.id),
                    "version": e.version,
                    "partition": e.partition,
                    "offset": e.offset,
                }
                for e in self.events
            ],
        }


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """A committed event, as handed to readers and subscription handlers."""

    id: UUID
    """Event id."""
    stream_id: str
    """The stream it belongs to."""
    version: int
    """Its version in the stream (the first event is 1)."""
    type: str
    """Event type."""
    data: Any
    """Decoded JSON when the content type is JSON, else the raw bytes."""
    raw: bytes
    """Payload bytes exactly as stored in Kafka."""
    metadata: dict[str, Any]
    """The event's metadata object ({} when none)."""
    created_at: datetime
    """When the writer accepted it (UTC)."""
    partition: int
    """Kafka partition."""
    offset: int
    """Kafka offset."""
    content_type: str = JSON_CONTENT_TYPE
    """Content type of ``raw``."""
    global_position: int | None = None
    """Position in ``$all`` (index reads only)."""
    write_id: UUID | None = None
    """The commit marker's write id (``ce_pgwrite``)."""
    xid: int | None = None
    """The writer's PostgreSQL transaction id (``ce_pgxid``)."""

    @property
    def category(self) -> str:
        """The stream's category (:func:`kafkastore.streams.category_of`)."""
        return category_of(self.stream_id)

    @property
    def is_json(self) -> bool:
        return self.content_type.split(";", 1)[0].strip() == JSON_CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class StreamState:
    """A stream's head (writer side) and how far the index has caught up."""

    stream_id: str
    version: int
    indexed_version: int
    category: str
    created_at: datetime | None
    updated_at: datetime | None
    deleted: bool = False
    """True once the stream was hard-deleted (tombstoned): its reads answer StreamDeleted."""
    readable_from: int | None = None
    """The lowest version a read can return now (retention and deletion applied), or None
    when nothing indexed is readable."""


@dataclass(frozen=True, slots=True)
class StreamPage:
    """One page of a stream read."""

    stream_id: str
    version: int
    events: tuple[RecordedEvent, ...]
    next_version: int | None
    index_behind: bool = False


@dataclass(frozen=True, slots=True)
class PositionPage:
    """One page of a category or ``$all`` read, in global-position order."""

    events: tuple[RecordedEvent, ...]
    next_position: int | None
    index_behind: bool = False


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    """A stream's metadata (docs/http.md "Stream lifecycle"); every stream has it, also one with no
    events yet (then ``metadata_version`` is 0 and every field None)."""

    stream_id: str
    metadata_version: int
    """0 = never set; each write adds 1 (checked like an expected version)."""
    max_count: int | None = None
    """Only the newest N events are readable."""
    max_age: int | None = None
    """Only events younger than this many seconds are readable."""
    truncate_before: int | None = None
    """Only versions >= this are readable (a soft delete sets it to the head + 1)."""
    acl: dict[str, Any] | None = None
    """Access lists, stored now (enforced by the security layer)."""
    custom: dict[str, Any] | None = None
    """Any JSON object of the user's."""

    def to_json(self) -> dict[str, Any]:
        """The body of ``GET /streams/{stream_id}/metadata``."""
        return {
            "stream_id": self.stream_id,
            "metadata_version": self.metadata_version,
            "max_count": self.max_count,
            "max_age": self.max_age,
            "truncate_before": self.truncate_before,
            "acl": self.acl,
            "custom": self.custom,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot of a stream's state as of ``version`` (served even when that version was
    truncated away: that is how state outlives a truncation)."""

    stream_id: str
    version: int
    type: str
    data: Any
    """Decoded JSON when the content type is JSON, else the raw bytes."""
    created_at: datetime | None = None
    content_type: str = JSON_CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class LoadedStream:
    """What ``load(stream_id)`` returns: the latest snapshot and the readable events after it."""

    stream_id: str
    snapshot: Snapshot | None
    events: tuple[RecordedEvent, ...]
    version: int
    """The stream's indexed head (the version the state is at once ``events`` are applied)."""
