"""Names and limits of API.md: stream ids, categories, event types, event ids."""

from __future__ import annotations

import random as _random
import re
import threading
import time
from uuid import UUID

from kafkastore.errors import InvalidRequest

MAX_NAME_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def category_of(stream_id: str) -> str:
    """The category: the stream id up to the first ``-`` (the whole id when there is none)."""
    return stream_id.partition("-")[0]


def check_stream_id(stream_id: object, *, field: str = "stream_id") -> str:
    """Return ``stream_id`` if it is a valid stream id, else raise InvalidRequest."""
    if not isinstance(stream_id, str):
        raise InvalidRequest(f"{field} must be a string", fields=[field])
    if not 1 <= len(stream_id) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"{field} must be 1-{MAX_NAME_LENGTH} characters", fields=[field])
    if stream_id.startswith("$"):
        raise InvalidRequest(f"{field} {stream_id!r} is reserved (starts with '$')", fields=[field])
    if _CONTROL.search(stream_id):
        raise InvalidRequest(f"{field} must not contain control characters", fields=[field])
    return stream_id


def check_event_type(event_type: object, *, field: str = "type") -> str:
    if not isinstance(event_type, str):
        raise InvalidRequest(f"{field} must be a string", fields=[field])
    if not 1 <= len(event_type) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"{field} must be 1-{MAX_NAME_LENGTH} characters", fields=[field])
    if _CONTROL.search(event_type):
        raise InvalidRequest(f"{field} must not contain control characters", fields=[field])
    return event_type


def check_category(category: object) -> str:
    name = check_stream_id(category, field="category")
    if "-" in name:
        raise InvalidRequest("category must not contain '-'", fields=["category"])
    return name


def parse_event_id(value: object, *, field: str = "id") -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a UUID string", fields=[field])
    try:
        return UUID(value)
    except ValueError:
        raise InvalidRequest(f"{field} {value!r} is not a UUID", fields=[field]) from None


class _Uuid7:
    """Time-ordered UUIDs (version 7, RFC 9562) so new ids cluster in b-tree indexes.

    A 12-bit counter (seeded randomly each millisecond) keeps ids from one process monotonic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0

    def __call__(self) -> UUID:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                self._seq += 1
                if self._seq > 0xFFF:
                    ms += 1
                    self._seq = 0
            else:
                self._seq = _random.getrandbits(10)
            self._last_ms = ms
            seq = self._seq
        # Not a secret, only unique: the time and counter bits already order ids; the
        # Mersenne Twister is reseeded in forked children, so processes do not collide.
        rand = _random.getrandbits(62)
        return UUID(int=(ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand)


new_event_id = _Uuid7()
