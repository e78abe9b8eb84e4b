"""Names and limits of docs/http.md: stream ids, categories, event types, event ids."""

from __future__ import annotations

import random as _random
import re
import time
from uuid import UUID, SafeUUID

from kafkastore.errors import InvalidRequest

MAX_NAME_LENGTH = 256
MAX_POSITION = 2**53 - 1
"""The largest version or global position a request may name (a larger one is refused, 400,
never sent to PostgreSQL): the largest integer every JSON reader holds exactly (JavaScript's
``Number.MAX_SAFE_INTEGER``), far below PostgreSQL's ``bigint``."""
MAX_AGE = 100 * 365 * 86400
"""The longest ``max_age`` of a stream's metadata, in seconds (100 years): PostgreSQL computes
``now() - max_age`` for every read, and a timestamp millions of years back is out of its range
(every read of the stream, and the indexer, would fail)."""
MAX_POSITION_DIGITS = 15
"""Digits of a version in a query string or ``Last-Event-ID`` (a pattern can say it; every
15-digit number is below :data:`MAX_POSITION`)."""
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
    if len(category) > MAX_NAME_LENGTH:  # no stream id has a longer one
        raise InvalidRequest(f"{field} must be 1-{MAX_NAME_LENGTH} characters", fields=[field])
    if category != category.lstrip():
        raise InvalidRequest(f"{field} {category!r} must not start with whitespace", fields=[field])
    check_stream_id(category.rstrip() or category, field=field)
    return category


def as_integer(value: object) -> int | None:
    """A JSON number that is an integer (``5`` or ``5.0``: JSON, like JSON Schema, does not
    tell them apart), else None (also for booleans)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def check_no_nul(value: object, *, field: str) -> None:
    """Refuse a JSON value (metadata, custom fields, ACL names, a label) with a NUL character
    in any string or key: PostgreSQL's text and jsonb cannot hold one, so it would be accepted
    here and fail later (in the index, where nothing can refuse it)."""
    if _has_nul(value):
        raise InvalidRequest(f"{field} must not contain NUL (\\u0000) characters", fields=[field])


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


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
