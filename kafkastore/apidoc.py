"""What the HTTP API answers, for the OpenAPI document (``/openapi.json``, ``/docs``).

The routes build their bodies with orjson (:mod:`indexer.render`, :class:`AppendResult`'s
``to_json``) and return them as plain responses, so these pydantic models never validate a
request or a response: they only *describe* them, once, for every route to cite. A test walks
``/openapi.json`` and fails when a response has no schema or a route lacks its errors.

:func:`errors` gives a route the error responses it can answer, each with the one error body of
docs/http.md (``{"error", "message", ...details}``); ``503`` carries ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSON = "application/json"


class ErrorBody(BaseModel):
    """Every error: a stable ``error`` code, a human ``message``, and the details of that code."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(
        description="invalid_request, unsupported_media_type, stream_not_found, "
        "stream_deleted, wrong_expected_version, duplicate_event_id, payload_too_large, "
        "unavailable, not_found, method_not_allowed",
        examples=["wrong_expected_version"],
    )
    message: str = Field(
        examples=["Wrong expected version: 5 (Stream: Order-1, Stream Version: 1)"]
    )
    details: list[str] | None = Field(
        None, description="invalid_request: the offending fields and parameters"
    )
    stream_id: str | None = Field(
        None, description="wrong_expected_version, stream_not_found, stream_deleted"
    )
    expected_version: int | str | None = Field(None, description="wrong_expected_version")
    current_version: int | None = Field(None, description="wrong_expected_version")
    conflicts: list[dict[str, Any]] | None = Field(
        None, description="wrong_expected_version of POST /append: one entry per failed append"
    )
    event_ids: list[str] | None = Field(None, description="duplicate_event_id")
    reason: str | None = Field(
        None,
        description="duplicate_event_id: repeated_in_request, stored_elsewhere, in_flight or "
        "payload_differs (the same id committed with another type, data or metadata)",
    )
    limit: str | None = Field(None, description="payload_too_large: the limit exceeded")
    maximum: int | None = Field(None, description="payload_too_large")
    actual: int | None = Field(None, description="payload_too_large")
    outcome: str | None = Field(
        None,
        description='unavailable: "unknown" when the append may have committed (retry with '
        "the same event ids); absent when nothing was appended",
    )


class EventPosition(BaseModel):
    """Where one appended event landed."""

    id: str = Field(description="event id (UUID)")
    version: int = Field(description="its version in the stream (the first event is 1)")
    partition: int = Field(description="Kafka partition")
    offset: int = Field(description="Kafka offset")


class AppendResult(BaseModel):
    """The outcome of one stream's append."""

    stream_id: str
    from_version: int
    to_version: int
    events: list[EventPosition]


class AppendResults(BaseModel):
    """The outcome of an atomic multi-stream append: one result per entry, in order."""

    results: list[AppendResult]


class RecordedEvent(BaseModel):
    """A committed event as reads return it."""

    id: str = Field(description="event id (UUID)")
    stream_id: str
    version: int
    type: str
    data: Any = Field(None, description="the payload, when it is JSON")
    data_base64: str | None = Field(
        None, description="the payload's bytes in base64, when it is not JSON (instead of data)"
    )
    content_type: str | None = Field(None, description="what data_base64 holds")
    metadata: dict[str, Any] = Field(description="the event's metadata ({} when none)")
    created_at: str = Field(description="RFC 3339 UTC")
    global_position: int = Field(description="position in $all (gap-free, commit order)")
    partition: int
    offset: int


class StreamPage(BaseModel):
    """One page of a stream."""

    stream_id: str
    version: int = Field(description="the highest indexed version of the stream")
    events: list[RecordedEvent]
    next_version: int | None = Field(description="where the next page starts; null at the end")


class PositionPage(BaseModel):
    """One page of a category or of $all, in global-position order."""

    events: list[RecordedEvent]
    next_position: int = Field(
        description="pass it back as from_position to continue; after a page shorter than "
        "limit it is past everything scanned, so a filtered tail moves on"
    )


class StreamState(BaseModel):
    """A stream's head (writer side, current at once) and how far the index caught up."""

    stream_id: str
    version: int
    indexed_version: int
    category: str
    created_at: str | None
    updated_at: str | None
    deleted: bool


class Status(BaseModel):
    """A health answer."""

    status: str = Field(examples=["ok"])


_ERROR_TEXT = {
    400: "invalid_request: malformed JSON, wrong types, bad names, bad expected version, "
    "unknown body fields or query parameters (details lists them)",
    404: "stream_not_found: the stream has no events",
    409: "wrong_expected_version (stream_id, expected_version, current_version; conflicts for "
    "POST /append) or duplicate_event_id (event_ids, reason)",
    410: "stream_deleted: the stream was hard-deleted",
    413: "payload_too_large: a configured limit was exceeded (limit, maximum, actual)",
    415: "unsupported_media_type: the body is declared as something other than JSON",
    503: "unavailable: Kafka or PostgreSQL unreachable or timed out, or the writer at capacity; "
    'retry after Retry-After seconds. Nothing was appended unless the body says "outcome": '
    '"unknown"',
}

RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}
ETAG = {
    "ETag": {
        "description": "a tag of this answer; send it back in If-None-Match for a 304 when the "
        "page is unchanged",
        "schema": {"type": "string"},
    }
}
INDEX_BEHIND = {
    "X-Index-Behind": {
        "description": "true when min_version was not indexed within timeout_ms: the page holds "
        "what is indexed",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses ``statuses`` (400, 404, 409, 410, 413, 415, 503) of a route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {"description": _ERROR_TEXT[status], "model": ErrorBody}
        if status == 503:
            response["headers"] = RETRY_AFTER
        out[status] = response
    return out


def ok(model: type[BaseModel], description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    """A success response with ``model`` as its JSON body and ``headers``."""
    response: dict[str, Any] = {"description": description, "model": model}
    if headers:
        response["headers"] = {k: v for h in headers.values() for k, v in h.items()}
    return response


NOT_MODIFIED: dict[str, Any] = {
    "description": "Not Modified: If-None-Match holds this page's ETag (no body)",
    "headers": ETAG,
}
