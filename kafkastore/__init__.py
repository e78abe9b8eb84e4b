"""kafkastore: an event store whose log is Apache Kafka and whose stream index is PostgreSQL.

>>> from kafkastore import EventStore, NewEvent
>>> store = EventStore.connect(kafka="127.0.0.1:9092", database="postgresql://…/kafkastore")
>>> store.append("Order-1", [NewEvent(type="OrderPlaced", data={"total": 12})])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kafkastore.errors import (
    AlreadyExists,
    AppendConflicts,
    ConfigurationError,
    DuplicateEventId,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    KafkaStoreError,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    SchemaError,
    SnapshotAboveHead,
    SnapshotNotFound,
    StreamDeleted,
    StreamNotFound,
    TruncateAboveHead,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WrongExpectedVersion,
    WrongMetadataVersion,
)
from kafkastore.records import (
    AppendRequest,
    AppendResult,
    EventPosition,
    ExpectedVersion,
    LoadedStream,
    NewEvent,
    PositionPage,
    RecordedEvent,
    Snapshot,
    StreamMetadata,
    StreamPage,
    StreamState,
)

if TYPE_CHECKING:
    from kafkastore.client import AsyncEventStore, EventStore

__all__ = [
    "AlreadyExists",
    "AppendConflicts",
    "AppendRequest",
    "AppendResult",
    "AsyncEventStore",
    "ConfigurationError",
    "DuplicateEventId",
    "EventPosition",
    "EventStore",
    "ExpectedVersion",
    "Forbidden",
    "IntegrityError",
    "InvalidRequest",
    "KafkaStoreError",
    "LoadedStream",
    "NewEvent",
    "NotFound",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "PositionPage",
    "RecordedEvent",
    "SchemaError",
    "Snapshot",
    "SnapshotAboveHead",
    "SnapshotNotFound",
    "StreamDeleted",
    "StreamMetadata",
    "StreamNotFound",
    "StreamPage",
    "StreamState",
    "TruncateAboveHead",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "WrongExpectedVersion",
    "WrongMetadataVersion",
]


def __getattr__(name: str) -> Any:
    # The client pulls in the writer and the read side; import it only when asked for.
    if name in ("EventStore", "AsyncEventStore"):
        from kafkastore import client

        return getattr(client, name)
    raise AttributeError(f"module 'kafkastore' has no attribute {name!r}")
