"""Kafka wire format: the CloudEvents Kafka binding in binary mode (docs/design.md section 3).

One message per event. Key = stream id (UTF-8). Value = payload bytes exactly as given (compact
JSON when the client sent JSON). Headers, all UTF-8: the CloudEvents attributes ``ce_specversion``,
``ce_id``, ``ce_type``, ``ce_source``, ``ce_subject`` (stream id), ``ce_time`` (RFC 3339),
``content-type``, and our extensions (lowercase alphanumeric names, so any CloudEvents SDK keeps
them): ``ce_streamversion``, ``ce_pgwrite``, ``ce_pgxid``, ``ce_pgsysid``, ``ce_metadata``,
``ce_correlationid``, ``ce_causationid``, ``ce_traceparent``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID, SafeUUID

import orjson

from kafkastore.records import BINARY_CONTENT_TYPE, JSON_CONTENT_TYPE, RecordedEvent

Header = tuple[str, str | bytes | None]

_METADATA_HEADERS = {
    "correlation_id": "ce_correlationid",
    "causation_id": "ce_causationid",
    "traceparent": "ce_traceparent",
}


_BINARY = (bytes, bytearray, memoryview)


def encode_payload(data: Any, content_type: str | None) -> tuple[bytes, str]:
    """Payload bytes and content type: bytes pass through unchanged, anything else is JSON."""
    if isinstance(data, _BINARY):
        return bytes(data), content_type or BINARY_CONTENT_TYPE
    return orjson.dumps(data), content_type or JSON_CONTENT_TYPE


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_metadata(metadata: dict[str, Any] | None) -> bytes | None:
    return orjson.dumps(metadata) if metadata else None


def encode_headers(
    *,
    event_id: UUID,
    event_type: str,
    stream_id: str,
    version: int,
    content_type: str,
    source: str,
    time: str,
    write_id: str,
    xid: int,
    sysid: str,
    metadata: dict[str, Any] | None,
    metadata_json: bytes | None,
) -> list[Header]:
    """The headers of one event message (``time`` already formatted, ``write_id`` a string)."""
    return HeaderStamp(source=source, time=time, write_id=write_id, xid=xid, sysid=sysid).headers(
        event_id=event_id,
        event_type=event_type,
        subject=stream_id.encode(),
        version=version,
        content_type=content_type,
        metadata=metadata,
        metadata_json=metadata_json,
    )


_SPECVERSION: Header = ("ce_specversion", b"1.0")


class HeaderStamp:
    """The headers every message of one write shares, encoded once per write (the writer
    produces thousands of messages per batch): :meth:`headers` adds each event's own."""

    __slots__ = ("_content_types", "_source", "_sysid", "_time", "_types", "_write_id", "_xid")

    def __init__(self, *, source: str, time: str, write_id: str, xid: int, sysid: str) -> None:
        self._source: Header = ("ce_source", source.encode())
        self._time: Header = ("ce_time", time.encode())
        self._write_id: Header = ("ce_pgwrite", write_id.encode())
        self._xid: Header = ("ce_pgxid", str(xid).encode())
        self._sysid: Header = ("ce_pgsysid", sysid.encode())
        self._types: dict[str, Header] = {}
        self._content_types: dict[str, Header] = {}

    def headers(
        self,
        *,
        event_id: UUID,
        event_type: str,
        subject: bytes,
        version: int,
        content_type: str,
        metadata: dict[str, Any] | None,
        metadata_json: bytes | None,
    ) -> list[Header]:
        """One message's headers, in the order of :func:`encode_headers` (``subject``: the
        stream id, encoded: the message key)."""
        type_header = self._types.get(event_type)
        if type_header is None:
            type_header = self._types[event_type] = ("ce_type", event_type.encode())
        content_header = self._content_types.get(content_type)
        if content_header is None:
            content_header = self._content_types[content_type] = (
                "content-type",
                content_type.encode(),
            )
        headers: list[Header] = [
            _SPECVERSION,
            ("ce_id", str(event_id).encode()),
            type_header,
            self._source,
            ("ce_subject", subject),
            self._time,
            content_header,
            ("ce_streamversion", str(version).encode()),
            self._write_id,
            self._xid,
            self._sysid,
        ]
        if metadata_json is not None:
            headers.append(("ce_metadata", metadata_json))
            assert metadata is not None
            for key, header in _METADATA_HEADERS.items():
                value = metadata.get(key)
                if isinstance(value, str) and value:
                    headers.append((header, value.encode()))
        return headers


class KafkaMessage(Protocol):
    """What we read of a confluent-kafka ``Message`` (so decoding is testable without one)."""

    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


class WireEvent(NamedTuple):
    """A message of the events topic, decoded but not yet judged real or phantom.

    A named tuple, not a dataclass: the indexer and subscriptions build one per message, and
    tuple construction is several times cheaper than a frozen dataclass's ``__init__``.
    """

    event_id: UUID
    stream_id: str
    version: int
    type: str
    content_type: str
    time: datetime
    write_id: UUID
    xid: int
    sysid: str
    metadata: dict[str, Any]
    metadata_json: bytes | None
    value: bytes
    partition: int
    offset: int

    def recorded(self) -> RecordedEvent:
        return RecordedEvent(
            id=self.event_id,
            stream_id=self.stream_id,
            version=self.version,
            type=self.type,
            data=decode_data(self.value, self.content_type),
            raw=self.value,
            metadata=self.metadata,
            created_at=self.time,
            partition=self.partition,
            offset=self.offset,
            content_type=self.content_type,
            write_id=self.write_id,
            xid=self.xid,
        )


class MalformedMessage(ValueError):
    """A message of the events topic lacks our headers or has unparsable ones (never real)."""


def parse_uuid(text: bytes) -> UUID:
    """``UUID(text)`` without the constructor's generality (a hot path: one per message)."""
    hex_digits = text.replace(b"-", b"")
    if len(hex_digits) != 32:
        raise ValueError(f"badly formed UUID {text!r}")
    value = UUID.__new__(UUID)
    object.__setattr__(value, "int", int(hex_digits, 16))
    object.__setattr__(value, "is_safe", SafeUUID.unknown)
    return value


# The fields every event of one write shares, parsed once per write: (ce_pgwrite, ce_pgxid,
# ce_pgsysid, ce_time) -> (write id, xid, sysid, time). Bounded: cleared when it grows past
# the cap (writes are consumed in bursts, so recent ones are what matter).
_WRITES: dict[tuple[bytes, bytes, bytes, bytes], tuple[UUID, int, str, datetime]] = {}
_WRITES_CAP = 8192
_JSON = JSON_CONTENT_TYPE.encode()


def decode(message: KafkaMessage) -> WireEvent:
    """Decode one message; raise MalformedMessage when it cannot be one of ours."""
    h = dict(message.headers() or ())
    try:
        key = (h["ce_pgwrite"], h["ce_pgxid"], h["ce_pgsysid"], h["ce_time"])
        shared = _WRITES.get(key)  # type: ignore[arg-type]
        if shared is None:
            write, xid, sysid, when = key
            shared = (
                parse_uuid(write),  # type: ignore[arg-type]
                int(xid),  # type: ignore[arg-type]
                sysid.decode(),  # type: ignore[union-attr]
                datetime.fromisoformat(when.decode()),  # type: ignore[union-attr]
            )
            if len(_WRITES) >= _WRITES_CAP:
                _WRITES.clear()
            _WRITES[key] = shared  # type: ignore[index]
        metadata_json = h.get("ce_metadata")
        metadata = orjson.loads(metadata_json) if metadata_json else {}
        if not isinstance(metadata, dict):
            raise MalformedMessage("ce_metadata is not an object")
        content_type = h.get("content-type") or _JSON
        return WireEvent(
            parse_uuid(h["ce_id"]),  # type: ignore[arg-type]
            h["ce_subject"].decode(),  # type: ignore[union-attr]
            int(h["ce_streamversion"]),  # type: ignore[arg-type]
            h["ce_type"].decode(),  # type: ignore[union-attr]
            content_type.decode(),
            shared[3],
            shared[0],
            shared[1],
            shared[2],
            metadata,
            metadata_json,
            message.value() or b"",
            message.partition() or 0,
            message.offset() or 0,
        )
    except (KeyError, ValueError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        raise MalformedMessage(f"not a kafkastore event: {exc}") from exc


def decode_data(value: bytes, content_type: str) -> Any:
    """Decoded JSON when the content type is JSON (and it parses), else the bytes."""
    if content_type.split(";", 1)[0].strip() == JSON_CONTENT_TYPE:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value
