"""Events as the JSON of docs/http.md (HTTP responses and ``kafkastore read`` output)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from kafkastore.codec import format_time
from kafkastore.records import PositionPage, RecordedEvent, Snapshot, StreamPage, StreamState


def event_json(e: RecordedEvent) -> dict[str, Any]:
    """One event. JSON payloads are embedded as stored (no re-serialisation), others as base64."""
    out: dict[str, Any] = {
        "id": str(e.id),
        "stream_id": e.stream_id,
        "version": e.version,
        "type": e.type,
    }
    if e.is_json and not isinstance(e.data, bytes):
        out["data"] = orjson.Fragment(e.raw)
    else:
        out["data_base64"] = base64.b64encode(e.raw).decode("ascii")
        out["content_type"] = e.content_type
    out["metadata"] = e.metadata
    out["created_at"] = format_time(e.created_at)
    out["global_position"] = e.global_position
    out["partition"] = e.partition
    out["offset"] = e.offset
    return out


def stream_page_json(page: StreamPage) -> bytes:
    return orjson.dumps(
        {
            "stream_id": page.stream_id,
            "version": page.version,
            "events": [event_json(e) for e in page.events],
            "next_version": page.next_version,
        }
    )


def position_page_json(page: PositionPage) -> bytes:
    return orjson.dumps(
        {"events": [event_json(e) for e in page.events], "next_position": page.next_position}
    )


def stream_state_json(state: StreamState) -> bytes:
    return orjson.dumps(
        {
            "stream_id": state.stream_id,
            "version": state.version,
            "indexed_version": state.indexed_version,
            "category": state.category,
            "created_at": format_time(state.created_at) if state.created_at else None,
            "updated_at": format_time(state.updated_at) if state.updated_at else None,
            "deleted": state.deleted,
            "readable_from": state.readable_from,
        }
    )


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as ``GET /streams/{stream_id}/snapshots/latest`` answers it."""
    out: dict[str, Any] = {
        "stream_id": snapshot.stream_id,
        "version": snapshot.version,
        "type": snapshot.type,
    }
    if isinstance(snapshot.data, bytes):
        out["data_base64"] = base64.b64encode(snapshot.data).decode("ascii")
        out["content_type"] = snapshot.content_type
    else:
        out["data"] = snapshot.data
    out["created_at"] = format_time(snapshot.created_at) if snapshot.created_at else None
    return out
