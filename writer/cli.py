"""``kafkastore append``: events from arguments, or JSON lines on stdin (one event per line)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

import orjson

from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest
from kafkastore.records import AppendRequest, NewEvent
from kafkastore.streams import parse_event_id
from writer.engine import Writer
from writer.prepare import parse_expected, prepare


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendOptions:
    """What one ``kafkastore append`` asks for (its arguments, as given)."""

    stream_id: str
    type: str | None = None
    """The event's type; None: read the events as JSON lines from stdin."""
    data: str = "{}"
    """The event's data as JSON text (with ``type``)."""
    expected_version: str = "any"
    """``any``, ``no_stream``, ``exists`` or a version number."""
    metadata: str | None = None
    """The event's metadata as a JSON object (with ``type``)."""
    id: str | None = None
    """The event's id (a UUID, with ``type``); generated when None."""


def _expected(raw: str) -> Any:
    return int(raw) if raw.lstrip("-").isdigit() else raw


def _json(raw: str, field: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{field} is not valid JSON: {exc}", fields=[field]) from None


def events_from(options: AppendOptions, stdin: IO[str]) -> list[NewEvent]:
    """The events to append: one from ``--type``/``data``, else JSON lines read from stdin."""
    if options.type is not None:
        metadata = _json(options.metadata, "--metadata") if options.metadata else None
        event_id = parse_event_id(options.id, field="--id") if options.id else None
        data = _json(options.data, "data")
        return [NewEvent(type=options.type, data=data, metadata=metadata, id=event_id)]
    events = []
    for number, line in enumerate(stdin, 1):
        if not line.strip():
            continue
        doc = _json(line, f"stdin line {number}")
        if not isinstance(doc, dict):
            raise InvalidRequest(f"stdin line {number} must be a JSON object with a type")
        events.append(
            NewEvent(
                type=doc.get("type"),  # type: ignore[arg-type]  # checked by prepare()
                data=doc.get("data"),
                metadata=doc.get("metadata"),
                id=parse_event_id(doc["id"], field=f"line {number}.id") if doc.get("id") else None,
            )
        )
    if not events:
        raise InvalidRequest("no events: give TYPE [DATA] or JSON lines on stdin")
    return events


def append(options: AppendOptions, settings: Settings, *, stdin: IO[str], out: IO[str]) -> int:
    """``kafkastore append``: append through a writer of our own, print the result as JSON."""
    expected = parse_expected(_expected(options.expected_version))
    events = tuple(events_from(options, stdin))
    prepared = prepare(AppendRequest(options.stream_id, events, expected), settings.limits)
    writer = Writer(settings).open()
    try:
        result = writer.submit([prepared], atomic=False).result()[0]
    finally:
        writer.close()
    out.write(orjson.dumps({**result.to_json(), "created": result.created}).decode() + "\n")
    return 0
