"""Append routes: ``POST /streams/{stream_id}`` and ``POST /append`` (docs/http.md); and the
lifecycle writes: ``PUT .../metadata``, ``DELETE /streams/{stream_id}``, ``PUT .../snapshots``.

The hot path stays off FastAPI's pydantic machinery: the body is parsed with orjson and checked
by writer.prepare (which raises our errors; the app maps them to statuses by one table), and the
response is pre-serialised bytes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response

from kafkastore import apidoc, apirules, auth_http
from kafkastore.codec import format_time
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, UnsupportedMediaType
from kafkastore.lifecycle import parse_metadata
from kafkastore.records import AppendResult, Snapshot
from kafkastore.streams import MAX_POSITION_DIGITS, check_no_nul, check_stream_id
from writer import lifecycle
from writer.decide import Deletion
from writer.engine import Writer
from writer.prepare import PreparedAppend, parse_append_body, parse_expected, parse_many_body

router = APIRouter(tags=["append"])

_VERSION = re.compile(rf"[0-9]{{1,{MAX_POSITION_DIGITS}}}")
"""An expected version in a query string: at most 15 ASCII digits."""

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "id": {"anyOf": [apirules.UUID, {"type": "null"}], "description": "generated when absent"},
        "type": apirules.EVENT_TYPE,
        "data": {"description": "any JSON value (the payload)"},
        "data_base64": {**apirules.BASE64, "description": "a binary payload (instead of data)"},
        "content_type": {"type": ["string", "null"], "minLength": 1, "pattern": "^[^\\x00]*$"},
        "metadata": apirules.JSON_OBJECT_OR_NULL,
    },
    # A payload: data or data_base64, never both.
    "oneOf": [{"required": ["data"]}, {"required": ["data_base64"]}],
}
_EXPECTED_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "enum": ["any", "no_stream", "exists"]},
        {"type": "integer", **apirules.at_least(0)},
    ],
    "default": "any",
}
_APPEND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["events"],
    "properties": {
        "expected_version": _EXPECTED_SCHEMA,
        "events": {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1},
    },
}
_MANY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["appends"],
    "properties": {
        "appends": {
            "type": "array",
            "minItems": 1,
            "items": {
                **_APPEND_SCHEMA,
                "required": ["stream_id", "events"],
                "properties": {"stream_id": apirules.STREAM_ID, **_APPEND_SCHEMA["properties"]},
            },
        }
    },
}
_ERRORS = apidoc.errors(400, 409, 410, 413, 415, 503)

_READ_YOUR_WRITE = {
    "ReadTheStream": apidoc.link(
        "get",
        "/streams/{stream_id}",
        "read the stream up to the events just appended (it waits until they are indexed)",
        parameters={
            "stream_id": "$request.path.stream_id",
            "min_version": "$response.body#/to_version",
        },
    )
}
"""The link of an append's answer: read your write."""
_READ_YOUR_WRITES = {
    "ReadTheFirstStream": apidoc.link(
        "get",
        "/streams/{stream_id}",
        "read the first stream of the atomic append up to its events (once they are indexed)",
        parameters={
            "stream_id": "$response.body#/results/0/stream_id",
            "min_version": "$response.body#/results/0/to_version",
        },
    )
}
"""The link of an atomic append's answer."""


def _check_json(request: Request) -> None:
    """Refuse a body declared as anything but JSON (415). No ``content-type`` at all is taken
    as JSON: the body is parsed, and refused with 400 when it is not."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(declared)


def _json(content: Any, status: int) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def _submit(
    request: Request, prepared: Sequence[PreparedAppend], atomic: bool
) -> list[AppendResult]:
    writer: Writer = request.app.state.writer
    # wait=0: a full writer answers 503 at once instead of queueing without bound.
    future = writer.submit(prepared, atomic=atomic, wait=0.0)
    return await asyncio.wrap_future(future)


@router.post(
    "/streams/{stream_id:path}",  # stream ids may contain "/"
    status_code=201,
    summary="Append events to one stream",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _APPEND_SCHEMA}},
        }
    },
    response_model=apidoc.AppendResult,
    response_description="the events were appended: their versions, partitions and offsets",
    responses={
        201: {"links": _READ_YOUR_WRITE},
        200: {
            **apidoc.ok(
                apidoc.AppendResult,
                "an idempotent repeat: these events were already committed, at these positions",
            ),
            "links": _READ_YOUR_WRITE,
        },
        **_ERRORS,
    },
)
async def append_to_stream(stream_id: apirules.StreamIdPath, request: Request) -> Response:
    """Append events to one stream (201 created, 200 for an idempotent repeat). The body must
    be JSON (``content-type: application/json``, or none); another content type is 415."""
    _check_json(request)
    settings: Settings = request.app.state.settings
    prepared = parse_append_body(await request.body(), stream_id, settings.limits)
    result = (await _submit(request, [prepared], atomic=False))[0]
    return _json(result.to_json(), 201 if result.created else 200)


@router.post(
    "/append",
    status_code=201,
    summary="Append to several streams atomically (all or nothing)",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _MANY_SCHEMA}}}
    },
    response_model=apidoc.AppendResults,
    response_description="every entry was appended (one result per entry, in order)",
    responses={
        201: {"links": _READ_YOUR_WRITES},
        200: {
            **apidoc.ok(apidoc.AppendResults, "an idempotent repeat of every entry"),
            "links": _READ_YOUR_WRITES,
        },
        **_ERRORS,
    },
)
async def append_many(request: Request) -> Response:
    """Append to several streams atomically: all entries are stored, or none (any failed
    precondition answers 409 listing every failed entry under ``conflicts``)."""
    _check_json(request)
    settings: Settings = request.app.state.settings
    prepared = parse_many_body(await request.body(), settings.limits)
    results = await _submit(request, prepared, atomic=True)
    created = any(r.created for r in results)
    return _json({"results": [r.to_json() for r in results]}, 201 if created else 200)


# -- stream lifecycle (docs/http.md "Stream lifecycle") --------------------------------------------


def _object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", fields=["body"]) from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object", fields=["body"])
    return document


@router.put(
    "/streams/{stream_id:path}/metadata",
    tags=["lifecycle"],
    summary="Replace a stream's metadata (retention, ACL, custom)",
    openapi_extra=apidoc.body(apirules.MetadataWrite, custom=apirules.JSON_OBJECT_OR_NULL),
    response_model=apidoc.MetadataBody,
    response_description="the new metadata (metadata_version + 1)",
    responses=apidoc.errors(
        400,
        409,
        410,
        503,
        text={
            400: "invalid_request: malformed JSON, unknown fields, wrong types, zero or negative "
            "values, truncate_before above the head + 1, a bad stream id or unknown query "
            "parameters; nothing changes",
            409: "wrong_expected_version: expected_metadata_version is not the metadata_version "
            "(expected_version, current_version are the metadata's)",
            410: "stream_deleted: the stream was hard-deleted",
        },
    ),
)
async def put_metadata(stream_id: apirules.StreamIdPath, request: Request) -> Response:
    """Replace the metadata when ``expected_metadata_version`` matches (``"any"`` always);
    settable before the stream has events. Nothing changes on an error."""
    update = parse_metadata(_object(await request.body()))
    settings: Settings = request.app.state.settings
    try:
        metadata = await asyncio.to_thread(lifecycle.set_metadata, settings, stream_id, update)
    finally:  # also when the outcome is unknown: the stream's ACL may have changed
        auth_http.forget_stream_acl(request, stream_id)
    return _json(metadata.to_json(), 200)


@router.delete(
    "/streams/{stream_id:path}",
    status_code=204,
    tags=["lifecycle"],
    summary="Delete a stream (soft, or hard with ?hard=true)",
    response_class=Response,
    response_description="deleted (no body)",
    responses=apidoc.errors(
        400,
        409,
        410,
        503,
        text={
            400: "invalid_request: a bad expected_version, hard or stream id, or unknown query "
            "parameters",
            409: "wrong_expected_version: the stream's version does not satisfy expected_version",
            410: "stream_deleted: the stream was already hard-deleted",
        },
    ),
)
async def delete_stream(
    stream_id: apirules.StreamIdPath,
    request: Request,
    expected_version: Annotated[str, Query(json_schema_extra=apirules.EXPECTED_WORD)] = "any",
    hard: bool = False,
) -> Response:
    """Soft delete: the stream reads as 404 and its events leave every read; an append
    recreates it and numbering continues. ``hard=true``: a tombstone, 410 for good."""
    number = _VERSION.fullmatch(expected_version)
    value: object = int(expected_version) if number else expected_version
    deletion = Deletion(check_stream_id(stream_id), parse_expected(value), hard)
    writer: Writer = request.app.state.writer
    await asyncio.wrap_future(writer.submit_deletion(deletion))
    return Response(status_code=204)


@router.put(
    "/streams/{stream_id:path}/snapshots",
    status_code=201,
    tags=["lifecycle"],
    summary="Save a snapshot of a stream's state at a version",
    openapi_extra=apidoc.body(apirules.SNAPSHOT_WRITE),
    response_model=apidoc.SnapshotStored,
    response_description="stored (replacing a snapshot of the same version)",
    responses=apidoc.errors(
        400,
        409,
        410,
        503,
        text={
            400: "invalid_request: malformed JSON, unknown fields, a bad version, type, data or "
            "data_base64, a bad stream id or unknown query parameters",
            409: "snapshot_above_head: version is above the stream's version (stream_id, "
            "version, current_version)",
            410: "stream_deleted: the stream was hard-deleted",
        },
    ),
)
async def put_snapshot(stream_id: apirules.StreamIdPath, request: Request) -> Response:
    """Store a snapshot at ``version`` (at most the head); one per version, the latest wins."""
    document = _object(await request.body())
    unknown = set(document) - {"version", "type", "data", "data_base64", "content_type"}
    if unknown:
        raise InvalidRequest(
            f"unknown fields: {', '.join(sorted(unknown))}", fields=sorted(unknown)
        )
    content_type = document.get("content_type")
    if content_type is not None and (not isinstance(content_type, str) or not content_type):
        raise InvalidRequest("content_type must be a non-empty string", fields=["content_type"])
    check_no_nul(content_type, field="content_type")
    if "data_base64" in document:
        if "data" in document:
            raise InvalidRequest("give data or data_base64, not both", fields=["data_base64"])
        data: Any = _base64(document["data_base64"])
        content_type = content_type or "application/octet-stream"
    else:
        if "data" not in document:
            raise InvalidRequest("data is required", fields=["data"])
        data, content_type = document["data"], None
    settings: Settings = request.app.state.settings
    snapshot = await asyncio.to_thread(
        lifecycle.save_snapshot,
        settings,
        stream_id,
        document.get("version"),
        document.get("type"),
        data,
        content_type=content_type,
    )
    return _json(_snapshot_json(snapshot), 201)


def _snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "stream_id": snapshot.stream_id,
        "version": snapshot.version,
        "type": snapshot.type,
        "created_at": format_time(snapshot.created_at) if snapshot.created_at else None,
    }


def _base64(value: object) -> bytes:
    import base64
    import binascii

    if not isinstance(value, str):
        raise InvalidRequest("data_base64 must be a base64 string", fields=["data_base64"])
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("data_base64 is not valid base64", fields=["data_base64"]) from None
