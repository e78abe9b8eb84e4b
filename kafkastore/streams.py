"""Names and limits of docs/http.md: stream ids, categories, event types, event ids."""

from __future__ import annotations

import random as _random
import re
import time
from uuid import UUID, SafeUUID

from kafkastore.errors import InvalidRequest

MAX_NAME_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def category_of(stream_id: str) -> str:
    """The category: the stream id up to the first ``-`` (the whole id when there is none)."""
    return stream_id.partition("-")[0]


def check_stream_id(stream_id: object, *, field: str = "stream_id") -> str:
    """Return ``stream_id`` if it is a valid stream id, else raise InvalidRequest: 1-256
    characters, not blank, no leading or trailing whitespace, no control characters, not
    starting with ``$`` (reserved). ``/`` is allowed (routes take stream ids as paths)."""
    if not isinstance(stream_id, str):
        raise InvalidRequest(f"{field} must be a string", fields=[field])
    if not 1 <= len(stream_id) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"{field} must be 1-{MAX_NAME_LENGTH} characters", fields=[field])
    if not stream_id.strip():
        raise InvalidRequest(f"{field} must not be blank", fields=[field])
    if stream_id != stream_id.strip():
        # "Order-1 " and "Order-1" would be two streams that look the same in every log.
        raise InvalidRequest(
            f"{field} {stream_id!r} must not start or end with whitespace", fields=[field]
        )
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
    """Return ``category`` if some valid stream id has it (:func:`category_of`), else raise
    InvalidRequest: a stream id without ``-`` that may end with whitespace (``"a -1"``)."""
    field = "category"
    if not isinstance(category, str):
        raise InvalidRequest(f"{field} must be a string", fields=[field])
    if "-" in category:
        raise InvalidRequest(f"{field} must not contain '-'", fields=[field])
    if category != category.lstrip():
        raise InvalidRequest(f"{field} {category!r} must not start with whitespace", fields=[field])
    check_stream_id(category.rstrip() or category, field=field)
    return category


def parse_event_id(value: object, *, field: str = "id") -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a UUID string", fields=[field])
    try:
        return UUID(value)
    except ValueError:
        raise InvalidRequest(f"{field} {value!r} is not a UUID", fields=[field]) from None


def new_event_id() -> UUID:
    """A time-ordered UUID (version 7, RFC 9562): new ids cluster in b-tree indexes.

    48 bits of Unix milliseconds, then 74 random bits. Ids of one millisecond are not ordered
    among themselves (nothing needs that; versions order a stream), which keeps this lock-free
    on the append hot path. Not a secret, only unique: the Mersenne Twister is reseeded in
    forked children, so processes do not collide.
    """
    ms = time.time_ns() // 1_000_000
    rand = _getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & _LOW62)
    uid = UUID.__new__(UUID)
    object.__setattr__(uid, "int", value)
    object.__setattr__(uid, "is_safe", SafeUUID.unknown)
    return uid


_getrandbits = _random.getrandbits
_LOW62 = (1 << 62) - 1
