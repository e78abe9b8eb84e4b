"""What the HTTP API answers, for the OpenAPI document (``/openapi.json``, ``/docs``).

The routes build their bodies with orjson (:mod:`indexer.render`, :class:`AppendResult`'s
``to_json``) and return them as plain responses, so these pydantic models never validate a
request or a response: they only *describe* them, once, for every route to cite. A test walks
``/openapi.json`` and fails when a response has no schema or a route lacks its errors.

:func:`errors` gives a route the error responses it can answer, each with the one error body of
docs/http.md (``{"error", "message", ...details}``); ``503`` carries ``Retry-After``. A route
whose error means something narrower than the generic text passes its own (``text=``). Bodies
that are not JSON (Server-Sent Events, the console's page and assets, metrics) are described by
:func:`media` with their own media type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kafkastore.apirules import Acl

JSON = "application/json"


class ErrorBody(BaseModel):
    """Every error: a stable ``error`` code, a human ``message``, and the details of that code."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(
        description="invalid_request, unsupported_media_type, stream_not_found, "
        "snapshot_not_found, stream_deleted, wrong_expected_version, snapshot_above_head, "
        "duplicate_event_id, payload_too_large, unavailable, schema, configuration, not_found, "
        "method_not_allowed",
        examples=["wrong_expected_version"],
    )
    message: str = Field(
        examples=["Wrong expected version: 5 (Stream: Order-1, Stream Version: 1)"]
    )
    details: list[str] | None = Field(
        None, description="invalid_request: the offending fields and parameters"
    )
    stream_id: str | None = Field(
        None,
        description="wrong_expected_version, stream_not_found, stream_deleted, "
        "snapshot_not_found, snapshot_above_head",
    )
    expected_version: int | str | None = Field(
        None, description="wrong_expected_version (of the metadata for PUT .../metadata)"
    )
    current_version: int | None = Field(
        None,
        description="wrong_expected_version: the stream's version (its metadata_version for "
        "PUT .../metadata); snapshot_above_head: the stream's version",
    )
    version: int | None = Field(None, description="snapshot_above_head: the snapshot's version")
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


class Strict(BaseModel):
    """A body the app answers: exactly these fields (the document says so: no others)."""

    model_config = ConfigDict(extra="forbid")


class EventPosition(Strict):
    """Where one appended event landed."""

    id: str = Field(description="event id (UUID)")
    version: int = Field(description="its version in the stream (the first event is 1)")
    partition: int = Field(description="Kafka partition")
    offset: int = Field(description="Kafka offset")


class AppendResult(Strict):
    """The outcome of one stream's append."""

    stream_id: str
    from_version: int
    to_version: int
    events: list[EventPosition]


class AppendResults(Strict):
    """The outcome of an atomic multi-stream append: one result per entry, in order."""

    results: list[AppendResult]


class RecordedEvent(Strict):
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


class StreamPage(Strict):
    """One page of a stream."""

    stream_id: str
    version: int = Field(description="the highest indexed version of the stream")
    events: list[RecordedEvent]
    next_version: int | None = Field(description="where the next page starts; null at the end")


class PositionPage(Strict):
    """One page of a category or of $all, in global-position order."""

    events: list[RecordedEvent]
    next_position: int = Field(
        description="pass it back as from_position to continue; after a page shorter than "
        "limit it is past everything scanned, so a filtered tail moves on"
    )


class StreamState(Strict):
    """A stream's head (writer side, current at once) and how far the index caught up."""

    stream_id: str
    version: int
    indexed_version: int
    category: str
    created_at: str | None
    updated_at: str | None
    deleted: bool
    readable_from: int | None = Field(
        description="the lowest version a read returns now (retention and deletion applied); "
        "null when nothing indexed is readable"
    )


class Status(Strict):
    """A health answer."""

    status: str = Field(examples=["ok"])


class Ready(Strict):
    """``GET /readyz``: ready, and who owns the topic's partitions in the indexer group."""

    status: str = Field(examples=["ready"])
    indexer: dict[str, Any] | None = Field(
        None,
        description="the indexer group: group, state, members, owned_partitions, partitions "
        "(no member at all does not fail readiness)",
    )


# -- stream lifecycle (docs/http.md "Stream lifecycle") ------------------------------------------


class MetadataBody(Strict):
    """A stream's metadata; ``metadata_version`` 0 means never set."""

    stream_id: str
    metadata_version: int
    max_count: int | None
    max_age: int | None
    truncate_before: int | None
    acl: Acl | None
    custom: dict[str, Any] | None


class SnapshotStored(Strict):
    """The answer to ``PUT /streams/{stream_id}/snapshots`` (the data is not echoed)."""

    stream_id: str
    version: int
    type: str
    created_at: str | None


class SnapshotBody(Strict):
    """A stored snapshot (served even when its version was truncated away)."""

    stream_id: str
    version: int
    type: str
    data: Any = None
    data_base64: str | None = None
    content_type: str | None = None
    created_at: str


# -- the web console's own JSON (docs/http.md "Web console") ------------------------------------


class PartitionLag(Strict):
    """How far the index is behind on one partition."""

    partition: int
    offsets: int
    seconds: float


class Overview(Strict):
    """``GET /console/api/overview``."""

    topic: str
    indexed_events: int = Field(description="the last global position")
    streams: int
    appended_per_second: float = Field(description="events appended in the last minute / 60")
    index_lag: list[PartitionLag]


class StreamSummary(Strict):
    """One stream of the console's list."""

    stream_id: str
    category: str
    version: int
    updated_at: str


class StreamList(Strict):
    """``GET /console/api/streams``: a page of streams and the cursors (null at the ends)."""

    streams: list[StreamSummary]
    next: str | None = Field(description="pass it as after for the next page")
    previous: str | None = Field(description="pass it as before for the previous page")


class GroupMember(Strict):
    """A member of a consumer group and its partitions of the events topic."""

    member_id: str
    client_id: str
    host: str
    partitions: list[int]


class GroupPartition(Strict):
    """A group's position on one partition."""

    partition: int
    committed: int | None
    high_watermark: int
    lag: int


class Group(Strict):
    """A consumer group of the events topic."""

    group: str
    state: str
    members: list[GroupMember]
    partitions: list[GroupPartition]
    lag: int


class Groups(Strict):
    """``GET /console/api/groups``."""

    groups: list[Group]


class DeadLetters(Strict):
    """``GET /console/api/groups/{group}/dead-letters``: the group's messages in ``<topic>.dlq``
    (partition, offset, key, stream_id, type, event_id, error, attempts, origin, headers, value)."""

    group: str
    dead_letters: list[dict[str, Any]]


class Replayed(Strict):
    """``POST .../dead-letters/replay``: each letter's partition, offset, stream_id, event_id,
    ``outcome`` (handled, failed, phantom, pending, hidden, already-replayed, interrupted) and
    error."""

    group: str
    replayed: list[dict[str, Any]]


_ERROR_TEXT = {
    400: "invalid_request: malformed JSON, wrong types, bad names, bad expected version, "
    "unknown body fields or query parameters (details lists them)",
    401: "unauthorized (auth on): no, bad, expired or revoked bearer token; WWW-Authenticate: "
    "Bearer",
    403: "forbidden (auth on): the principal lacks the right; never says whether a stream exists",
    404: "stream_not_found: the stream has no events",
    409: "wrong_expected_version (stream_id, expected_version, current_version; conflicts for "
    "POST /append) or duplicate_event_id (event_ids, reason)",
    410: "stream_deleted: the stream was hard-deleted",
    413: "payload_too_large: a configured limit was exceeded (limit, maximum, actual)",
    415: "unsupported_media_type: the body is declared as something other than JSON",
    500: "configuration: the server is not configured for this request",
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


def errors(
    *statuses: int, text: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The error responses ``statuses`` (400, 404, 409, 410, 413, 415, 500, 503) of a route;
    ``text`` replaces the generic description of some of them for this route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = (text or {}).get(status, _ERROR_TEXT[status])
        response: dict[str, Any] = {"description": description, "model": ErrorBody}
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


def link(
    method: str,
    path: str,
    description: str,
    *,
    parameters: Mapping[str, str] | None = None,
    body: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An OpenAPI link from a response to the operation ``method path`` (by ``operationRef``):
    what a client does next with what the answer says. ``parameters`` and ``body`` (fields of
    the next request's body) map names to runtime expressions (``$response.body#/id``)."""
    pointer = path.replace("~", "~0").replace("/", "~1").replace("{", "%7B").replace("}", "%7D")
    out: dict[str, Any] = {
        "operationRef": f"#/paths/{pointer}/{method}",
        "description": description,
    }
    if parameters:
        out["parameters"] = dict(parameters)
    if body:
        out["requestBody"] = dict(body)
    return out


def media(description: str, *media_types: str) -> dict[str, Any]:
    """A success response whose body is text of one of ``media_types`` (not JSON). The route
    declares ``response_class=Response`` so that its error responses stay JSON."""
    content = {media_type: {"schema": {"type": "string"}} for media_type in media_types}
    return {"description": description, "content": content}


def body(model: type[BaseModel] | dict[str, Any], **properties: dict[str, Any]) -> dict[str, Any]:
    """A route's ``openapi_extra``: a required JSON request body described by ``model`` (or a
    JSON schema), with ``properties`` replacing those of the model's schema (pydantic cannot
    cite :data:`JSON_SCHEMAS`). A model's nested models are cited in ``components`` (a
    response model of the app must bring them)."""
    if isinstance(model, dict):
        schema = model
    else:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
    for name, replacement in properties.items():
        schema["properties"][name] = {**schema["properties"][name], **replacement}
        schema["properties"][name].pop("type", None)
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


NOT_MODIFIED: dict[str, Any] = {
    "description": "Not Modified: If-None-Match holds this page's ETag (no body)",
    "headers": ETAG,
}
