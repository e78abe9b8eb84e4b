"""Append routes: ``POST /streams/{stream_id}`` and ``POST /append`` (docs/http.md).

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

from kafkastore.config import Settings
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
_ERRORS: dict[int | str, dict[str, Any]] = {
    "400": {"description": "invalid_request"},
    "409": {"description": "wrong_expected_version or duplicate_event_id"},
    "410": {"description": "stream_deleted"},
    "413": {"description": "payload_too_large"},
    "503": {"description": "unavailable (Retry-After; outcome unknown when the body says so)"},
}


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
    responses={"200": {"description": "idempotent repeat of a committed append"}, **_ERRORS},
)
async def append_to_stream(stream_id: str, request: Request) -> Response:
    """Append events to one stream (201 created, 200 for an idempotent repeat)."""
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
    responses=_ERRORS,
)
async def append_many(request: Request) -> Response:
    """Append to several streams atomically: all entries are stored, or none."""
    settings: Settings = request.app.state.settings
    prepared = parse_many_body(await request.body(), settings.limits)
    results = await _submit(request, prepared, atomic=True)
    created = any(r.created for r in results)
    return _json({"results": [r.to_json() for r in results]}, 201 if created else 200)
