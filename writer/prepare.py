"""Appends checked against the names and limits of docs/http.md and made ready to produce.

Everything here runs before a transaction starts: a bad append is rejected with one of our
errors (InvalidRequest, PayloadTooLarge, DuplicateEventId) and nothing is produced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson

from kafkastore.codec import encode_metadata, encode_payload
from kafkastore.config import Limits
from kafkastore.errors import DuplicateEventId, InvalidRequest, PayloadTooLarge
from kafkastore.records import AppendRequest, ExpectedVersion, NewEvent
from kafkastore.streams import (
    MAX_POSITION,
    as_integer,
    check_event_type,
    check_no_nul,
    check_stream_id,
    new_event_id,
    parse_event_id,
)

_EXPECTED_WORDS = {"any", "no_stream", "exists"}


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """One event, validated and encoded: what is produced, byte for byte."""

    id: UUID
    type: str
    payload: bytes
    content_type: str
    metadata: dict[str, Any] | None
    metadata_json: bytes | None
    digest: bytes = field(default=b"", compare=False)
    """:func:`payload_digest` of what is produced; computed when not given. The marker keeps
    it, so that a retry can be told from another payload under the same id."""

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(
                self,
                "digest",
                payload_digest(self.type, self.content_type, self.payload, self.metadata_json),
            )


DIGEST_BYTES = 16


def payload_digest(
    event_type: str, content_type: str, payload: bytes, metadata_json: bytes | None
) -> bytes:
    """What makes two events with one id the same event: a BLAKE2b digest of the type, the
    content type, the payload bytes and the metadata JSON (each length-prefixed, so no two
    different events frame to the same bytes). A retry must send the same bytes: JSON data
    with its keys in another order is another payload."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES, person=b"kafkastore-ev1")
    for part in (event_type.encode(), content_type.encode(), metadata_json or b"", payload):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


@dataclass(frozen=True, slots=True)
class PreparedAppend:
    """One stream's part of an append, validated."""

    stream_id: str
    expected: ExpectedVersion
    events: tuple[PreparedEvent, ...]
    supplied_ids: bool
    """True when the client gave (some) event ids: only then can the append be a repeat."""
    size: int


def parse_expected(value: object, *, field: str = "expected_version") -> ExpectedVersion:
    """One of "any", "no_stream", "exists", or an integer >= 0 (0 means "no_stream")."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{field} must be a version or a word", fields=[field])
    if isinstance(value, float):
        value = as_integer(value) if value.is_integer() else value
    if isinstance(value, int):
        if value < 0:
            raise InvalidRequest(f"{field} must not be negative", fields=[field])
        if value > MAX_POSITION:
            raise InvalidRequest(f"{field} must be at most {MAX_POSITION}", fields=[field])
        return "no_stream" if value == 0 else value
    if isinstance(value, str) and value in _EXPECTED_WORDS:
        return value  # type: ignore[return-value]
    raise InvalidRequest(
        f'{field} must be "any", "no_stream", "exists" or a version >= 0, got {value!r}',
        fields=[field],
    )


def prepare(request: AppendRequest, limits: Limits) -> PreparedAppend:
    """Validate a Python-API append."""
    stream_id = check_stream_id(request.stream_id)
    expected = parse_expected(request.expected_version)
    if not request.events:
        raise InvalidRequest("an append needs at least one event", fields=["events"])
    _check_count(len(request.events), limits)
    events = []
    size = 0
    supplied = False
    for i, event in enumerate(request.events):
        if not isinstance(event, NewEvent):
            raise InvalidRequest(f"events[{i}] must be a NewEvent", fields=[f"events[{i}]"])
        check_event_type(event.type, field=f"events[{i}].type")
        if event.metadata is not None and not isinstance(event.metadata, dict):
            raise InvalidRequest("metadata must be an object", fields=[f"events[{i}].metadata"])
        check_no_nul(event.metadata, field=f"events[{i}].metadata")
        check_no_nul(event.content_type, field=f"events[{i}].content_type")
        try:
            payload, content_type = encode_payload(event.data, event.content_type)
            metadata_json = encode_metadata(event.metadata)
        except TypeError as exc:
            raise InvalidRequest(
                f"events[{i}].data is not JSON-serialisable: {exc}", fields=[f"events[{i}].data"]
            ) from None
        supplied = supplied or event.id is not None
        prepared = PreparedEvent(
            id=event.id if event.id is not None else new_event_id(),
            type=event.type,
            payload=payload,
            content_type=content_type,
            metadata=event.metadata,
            metadata_json=metadata_json,
        )
        size += _check_event_size(prepared, limits, i)
        events.append(prepared)
    _check_request_size(size, limits)
    _check_unique_ids(events)
    return PreparedAppend(stream_id, expected, tuple(events), supplied, size)


def parse_append_body(body: bytes, stream_id: str, limits: Limits) -> PreparedAppend:
    """Validate ``POST /streams/{stream_id}``'s JSON body."""
    document = _loads(body, limits)
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object", fields=["body"])
    return parse_append_object(document, stream_id, limits)


def parse_many_body(body: bytes, limits: Limits) -> list[PreparedAppend]:
    """Validate ``POST /append``'s JSON body (an atomic multi-stream append)."""
    document = _loads(body, limits)
    if not isinstance(document, dict) or not isinstance(document.get("appends"), list):
        raise InvalidRequest('the body must be {"appends": [...]}', fields=["appends"])
    unknown = set(document) - {"appends"}
    if unknown:
        raise InvalidRequest(
            f"unknown fields: {', '.join(sorted(unknown))}", fields=sorted(unknown)
        )
    entries = document["appends"]
    if not entries:
        raise InvalidRequest("appends must not be empty", fields=["appends"])
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidRequest(f"appends[{i}] must be an object", fields=[f"appends[{i}]"])
        stream_id = check_stream_id(entry.get("stream_id"), field=f"appends[{i}].stream_id")
        out.append(parse_append_object(entry, stream_id, limits, prefix=f"appends[{i}]."))
    _check_count(sum(len(a.events) for a in out), limits)
    _check_unique_ids([e for a in out for e in a.events])
    return out


def parse_append_object(
    document: Mapping[str, Any], stream_id: str, limits: Limits, *, prefix: str = ""
) -> PreparedAppend:
    """Validate one append's JSON object; ``prefix`` names its place in error fields."""
    stream_id = check_stream_id(stream_id)
    unknown = set(document) - {"expected_version", "events", "stream_id"}
    if unknown:
        raise InvalidRequest(
            f"unknown fields: {', '.join(sorted(unknown))}",
            fields=[prefix + name for name in sorted(unknown)],
        )
    expected = parse_expected(
        document.get("expected_version", "any"), field=prefix + "expected_version"
    )
    raw_events = document.get("events")
    if not isinstance(raw_events, list) or not raw_events:
        raise InvalidRequest("events must be a non-empty list", fields=[prefix + "events"])
    _check_count(len(raw_events), limits)
    events = []
    size = 0
    supplied = False
    for i, raw in enumerate(raw_events):
        where = f"{prefix}events[{i}]"
        event, had_id = _parse_event(raw, where)
        supplied = supplied or had_id
        size += _check_event_size(event, limits, i)
        events.append(event)
    _check_request_size(size, limits)
    _check_unique_ids(events)
    return PreparedAppend(stream_id, expected, tuple(events), supplied, size)


def _parse_event(raw: object, where: str) -> tuple[PreparedEvent, bool]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object", fields=[where])
    unknown = set(raw) - {"id", "type", "data", "metadata", "data_base64", "content_type"}
    if unknown:
        raise InvalidRequest(
            f"{where} has unknown fields: {', '.join(sorted(unknown))}",
            fields=[f"{where}.{name}" for name in sorted(unknown)],
        )
    event_type = check_event_type(raw.get("type"), field=f"{where}.type")
    had_id = raw.get("id") is not None
    event_id = parse_event_id(raw["id"], field=f"{where}.id") if had_id else new_event_id()
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest(f"{where}.metadata must be an object", fields=[f"{where}.metadata"])
    check_no_nul(metadata, field=f"{where}.metadata")
    content_type = raw.get("content_type")
    if content_type is not None and (not isinstance(content_type, str) or not content_type):
        raise InvalidRequest(
            f"{where}.content_type must be a string", fields=[f"{where}.content_type"]
        )
    check_no_nul(content_type, field=f"{where}.content_type")
    if "data_base64" in raw:
        if "data" in raw:
            raise InvalidRequest(
                f"{where} has both data and data_base64", fields=[f"{where}.data_base64"]
            )
        payload = _b64(raw["data_base64"], f"{where}.data_base64")
        content_type = content_type or "application/octet-stream"
    else:
        if "data" not in raw:
            raise InvalidRequest(f"{where}.data is required", fields=[f"{where}.data"])
        payload = orjson.dumps(raw["data"])
        content_type = content_type or "application/json"
    return (
        PreparedEvent(
            id=event_id,
            type=event_type,
            payload=payload,
            content_type=content_type,
            metadata=metadata or None,
            metadata_json=encode_metadata(metadata),
        ),
        had_id,
    )


def _b64(value: object, field: str) -> bytes:
    import base64
    import binascii

    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a base64 string", fields=[field])
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field} is not valid base64", fields=[field]) from None


def _loads(body: bytes, limits: Limits) -> Any:
    if len(body) > limits.max_request_bytes:
        raise PayloadTooLarge(
            f"request is {len(body)} bytes; the limit is {limits.max_request_bytes}",
            limit="max_request_bytes",
            maximum=limits.max_request_bytes,
            actual=len(body),
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", fields=["body"]) from None


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_events_per_append:
        raise PayloadTooLarge(
            f"{count} events in one append; the limit is {limits.max_events_per_append}",
            limit="max_events_per_append",
            maximum=limits.max_events_per_append,
            actual=count,
        )


def _check_event_size(event: PreparedEvent, limits: Limits, index: int) -> int:
    if len(event.payload) > limits.max_event_bytes:
        raise PayloadTooLarge(
            f"events[{index}] is {len(event.payload)} bytes; the limit is {limits.max_event_bytes}",
            limit="max_event_bytes",
            maximum=limits.max_event_bytes,
            actual=len(event.payload),
        )
    return len(event.payload) + len(event.metadata_json or b"") + len(event.type)


def _check_request_size(size: int, limits: Limits) -> None:
    if size > limits.max_request_bytes:
        raise PayloadTooLarge(
            f"the append is {size} bytes; the limit is {limits.max_request_bytes}",
            limit="max_request_bytes",
            maximum=limits.max_request_bytes,
            actual=size,
        )


def _check_unique_ids(events: Iterable[PreparedEvent]) -> None:
    seen: set[UUID] = set()
    repeated: list[str] = []
    for event in events:
        if event.id in seen:
            repeated.append(str(event.id))
        seen.add(event.id)
    if repeated:
        raise DuplicateEventId(repeated, DuplicateEventId.REPEATED_IN_REQUEST)


def prepare_many(requests: Sequence[AppendRequest], limits: Limits) -> list[PreparedAppend]:
    """Validate a Python-API atomic multi-stream append (ids unique across all its events)."""
    if not requests:
        raise InvalidRequest("append_many needs at least one append", fields=["appends"])
    out = [prepare(r, limits) for r in requests]
    _check_count(sum(len(a.events) for a in out), limits)
    _check_unique_ids([e for a in out for e in a.events])
    return out
