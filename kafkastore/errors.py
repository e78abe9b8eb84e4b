"""The one error tree of kafkastore.

::

    KafkaStoreError
    ├── InvalidRequest            400 invalid_request   (bad JSON, types, names, expected version)
    │   ├── UnsupportedMediaType  415 unsupported_media_type (an append body that is not JSON)
    │   ├── NotFound              404 not_found         (an admin route's user or token id)
    │   └── AlreadyExists         409 already_exists    (a user name that is taken)
    ├── PayloadTooLarge           413 payload_too_large (a configured limit was exceeded)
    ├── StreamNotFound            404 stream_not_found
    ├── StreamDeleted             410 stream_deleted
    ├── SnapshotNotFound          404 snapshot_not_found
    ├── SnapshotAboveHead         409 snapshot_above_head (a snapshot of a version not written)
    ├── TruncateAboveHead         409 truncate_above_head (truncate_before above the head + 1)
    ├── WrongExpectedVersion      409 wrong_expected_version
    │   └── WrongMetadataVersion  409 wrong_expected_version (of the stream's metadata)
    ├── AppendConflicts           409 wrong_expected_version (several entries of one atomic append)
    ├── DuplicateEventId          409 duplicate_event_id
    ├── Unavailable               503 unavailable       (Kafka / PostgreSQL down or timed out)
    │   └── OutcomeUnknown        503 unavailable, "outcome": "unknown" (COMMIT's reply was lost)
    ├── Unauthorized              401 unauthorized      (no, bad, expired or revoked credentials)
    ├── Forbidden                 403 forbidden         (a known principal without the right)
    ├── ConfigurationError        a setting is missing or contradicts the cluster
    ├── SchemaError               migrations missing or from a newer version
    └── IntegrityError            the store disagrees with itself (audit findings, foreign cluster)

Errors carry data, not messages to parse. Driver exceptions (psycopg, confluent-kafka) are
translated to these in exactly one place each, by a table: ``ERRORS`` of :mod:`kafkastore.pg`
(exception class -> ours) and of :mod:`kafkastore.kafka` (Kafka error code -> ours). Code
elsewhere wraps driver calls in ``pg.translated()`` / ``kafka.translated()`` and catches ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AlreadyExists",
    "AppendConflicts",
    "ConfigurationError",
    "DuplicateEventId",
    "Forbidden",
    "IntegrityError",
    "InvalidRequest",
    "KafkaStoreError",
    "NotFound",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "SchemaError",
    "SnapshotAboveHead",
    "SnapshotNotFound",
    "StreamDeleted",
    "StreamNotFound",
    "TruncateAboveHead",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "WrongExpectedVersion",
    "WrongMetadataVersion",
]


class KafkaStoreError(Exception):
    """Root of every error raised by kafkastore."""

    code = "internal"
    retriable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict[str, Any]:
        """The machine-readable fields of the HTTP error body (besides error and message)."""
        return {}


class InvalidRequest(KafkaStoreError):
    """The request is malformed: bad JSON, wrong types, bad names or expected version."""

    code = "invalid_request"

    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields = tuple(fields)

    def details(self) -> dict[str, Any]:
        return {"details": list(self.fields)} if self.fields else {}


class UnsupportedMediaType(InvalidRequest):
    """An append's body is declared as something other than JSON (``content-type``)."""

    code = "unsupported_media_type"

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"content-type {content_type!r} is not JSON: send application/json",
            fields=["content-type"],
        )
        self.content_type = content_type


class NotFound(InvalidRequest):
    """An admin route names a user or a token id that does not exist (HTTP 404; for the CLI,
    bad input like any InvalidRequest)."""

    code = "not_found"


class AlreadyExists(InvalidRequest):
    """A user is added under a name that is taken (HTTP 409; for the CLI, bad input)."""

    code = "already_exists"


class PayloadTooLarge(KafkaStoreError):
    """A configured size or count limit was exceeded."""

    code = "payload_too_large"

    def __init__(self, message: str, *, limit: str, maximum: int, actual: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum
        self.actual = actual

    def details(self) -> dict[str, Any]:
        return {"limit": self.limit, "maximum": self.maximum, "actual": self.actual}


class StreamNotFound(KafkaStoreError):
    """The stream has no events."""

    code = "stream_not_found"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} not found")
        self.stream_id = stream_id

    def details(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id}


class StreamDeleted(KafkaStoreError):
    """The stream was hard-deleted."""

    code = "stream_deleted"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} was deleted")
        self.stream_id = stream_id

    def details(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id}


class WrongExpectedVersion(KafkaStoreError):
    """The stream's current version does not satisfy the append's expected version."""

    code = "wrong_expected_version"

    def __init__(self, stream_id: str, expected: int | str, current: int) -> None:
        super().__init__(
            f"Wrong expected version: {expected} (Stream: {stream_id}, Stream Version: {current})"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.current = current

    def details(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "expected_version": self.expected,
            "current_version": self.current,
        }


class WrongMetadataVersion(WrongExpectedVersion):
    """The stream's ``metadata_version`` does not match ``expected_metadata_version``."""

    def __init__(self, stream_id: str, expected: int | str, current: int) -> None:
        super().__init__(stream_id, expected, current)
        self.message = (
            f"Wrong expected metadata version: {expected} "
            f"(Stream: {stream_id}, Metadata Version: {current})"
        )
        self.args = (self.message,)


class SnapshotNotFound(KafkaStoreError):
    """The stream has no snapshot."""

    code = "snapshot_not_found"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} has no snapshot")
        self.stream_id = stream_id

    def details(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id}


class SnapshotAboveHead(KafkaStoreError):
    """A snapshot was saved at a version the stream has not reached."""

    code = "snapshot_above_head"

    def __init__(self, stream_id: str, version: int, current: int) -> None:
        super().__init__(
            f"snapshot version {version} is above the head of {stream_id!r} ({current})"
        )
        self.stream_id = stream_id
        self.version = version
        self.current = current

    def details(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "version": self.version,
            "current_version": self.current,
        }


class TruncateAboveHead(KafkaStoreError):
    """A metadata write's ``truncate_before`` is above the stream's head + 1."""

    code = "truncate_above_head"

    def __init__(self, stream_id: str, truncate_before: int, current: int) -> None:
        super().__init__(
            f"truncate_before {truncate_before} is above the head of {stream_id!r} + 1 "
            f"({current + 1})"
        )
        self.stream_id = stream_id
        self.truncate_before = truncate_before
        self.current = current

    def details(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "truncate_before": self.truncate_before,
            "current_version": self.current,
        }


class AppendConflicts(KafkaStoreError):
    """One or more entries of an atomic multi-stream append failed their precondition."""

    code = "wrong_expected_version"

    def __init__(self, conflicts: Sequence[WrongExpectedVersion]) -> None:
        names = ", ".join(c.stream_id for c in conflicts)
        super().__init__(f"wrong expected version on {len(conflicts)} stream(s): {names}")
        self.conflicts = tuple(conflicts)

    def details(self) -> dict[str, Any]:
        return {"conflicts": [c.details() for c in self.conflicts]}


class DuplicateEventId(KafkaStoreError):
    """Event ids reused in a way that is no idempotent repeat; ``reason`` says which way."""

    code = "duplicate_event_id"

    REPEATED_IN_REQUEST = "repeated_in_request"
    """The same id twice inside one request."""
    STORED_ELSEWHERE = "stored_elsewhere"
    """Committed on another stream, at other versions, or only some ids of the append."""
    IN_FLIGHT = "in_flight"
    """Held by another append being committed at the same moment, which this one does not
    repeat exactly."""
    PAYLOAD_DIFFERS = "payload_differs"
    """Committed at these very positions, but with another type, data or metadata."""

    _MESSAGES = {
        REPEATED_IN_REQUEST: "event ids repeated within this request",
        STORED_ELSEWHERE: "event ids already in the store on another stream or at other versions",
        IN_FLIGHT: "event ids used by another append being committed right now",
        PAYLOAD_DIFFERS: (
            "event ids already in the store with a different payload (type, data or metadata); "
            "a retry must send the same events"
        ),
    }

    def __init__(self, event_ids: Sequence[str], reason: str = STORED_ELSEWHERE) -> None:
        what = self._MESSAGES.get(reason, "event ids reused")
        super().__init__(f"{what}: {', '.join(event_ids)}")
        self.event_ids = tuple(event_ids)
        self.reason = reason

    def details(self) -> dict[str, Any]:
        return {"event_ids": list(self.event_ids), "reason": self.reason}


class Unavailable(KafkaStoreError):
    """Kafka or PostgreSQL is unreachable, overloaded or timed out; nothing was appended."""

    code = "unavailable"
    retriable = True
    outcome_unknown = False

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        return {"outcome": "unknown"} if self.outcome_unknown else {}


class OutcomeUnknown(Unavailable):
    """COMMIT's reply was lost and the outcome could not be settled; retry with the same ids."""

    outcome_unknown = True


class ConfigurationError(KafkaStoreError):
    """A setting is missing, malformed, or contradicts the cluster (e.g. partition count)."""

    code = "configuration"


class SchemaError(KafkaStoreError):
    """The database schema is missing or newer than this code."""

    code = "schema"


class IntegrityError(KafkaStoreError):
    """The store disagrees with itself: foreign cluster id, index conflict, audit finding."""

    code = "integrity"


class Unauthorized(KafkaStoreError):
    """No credentials, or bad, expired or revoked ones (HTTP 401 with ``WWW-Authenticate``)."""

    code = "unauthorized"

    def __init__(self, message: str = "a valid bearer token is required") -> None:
        super().__init__(message)


class Forbidden(KafkaStoreError):
    """A known principal without the right; names nothing the caller may not see (HTTP 403)."""

    code = "forbidden"

    def __init__(self, message: str = "access denied") -> None:
        super().__init__(message)
