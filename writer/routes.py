"""Append routes: ``POST /streams/{stream_id}`` and ``POST /append`` (API.md).

The hot path stays off FastAPI's pydantic machinery: the body is parsed with orjson and checked
by writer.prepare (which raises our errors; the app maps them to statuses by one table), and the
response is pre-serialised bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from kafkastore import apidoc
from kafkastore.config import Settings
from kafkastore.errors import UnsupportedMediaType
from kafkastore.records import AppendResult
from writer.engine import Writer
from writer.prepare import PreparedAppend, parse_append_body, parse_many_body

router = APIRouter(tags=["append"])

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string", "minLength": 1, "maxLength": 256},
        "data": {"description": "any JSON value"},
        "data_base64": {"type": "string", "description": "binary payload (instead of data)"},
        "content_type": {"type": "string"},
        "metadata": {"type": "object"},
    },
}
_EXPECTED_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "enum": ["any", "no_stream", "exists"]},
        {"type": "integer", "minimum": 0},
    ],
    "default": "any",
}
_APPEND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "expected_version": _EXPECTED_SCHEMA,
        "events": {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1},
    },
}
_ERRORS = apidoc.errors(400, 409, 410, 413, 415, 503)


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
        200: apidoc.ok(
            apidoc.AppendResult,
            "an idempotent repeat: these events were already committed, at these positions",
        ),
        **_ERRORS,
    },
)
async def append_to_stream(stream_id: str, request: Request) -> Response:
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
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["appends"],
                        "properties": {
                            "appends": {
                                "type": "array",
                                "items": {
                                    **_APPEND_SCHEMA,
                                    "required": ["stream_id", "events"],
                                    "properties": {
                                        "stream_id": {"type": "string"},
                                        **_APPEND_SCHEMA["properties"],
                                    },
                                },
                            }
                        },
                    }
                }
            },
        }
    },
    response_model=apidoc.AppendResults,
    response_description="every entry was appended (one result per entry, in order)",
    responses={
        200: apidoc.ok(apidoc.AppendResults, "an idempotent repeat of every entry"),
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
