"""Stream lifecycle rules shared by the roles (docs/http.md "Stream lifecycle", docs/design.md
section 12).

- :func:`parse_metadata` checks a metadata write (HTTP body or Python keywords) before any
  transaction starts: unknown fields, wrong types, ``max_count``/``max_age`` below 1 (or
  ``max_age`` above :data:`~kafkastore.streams.MAX_AGE`) are InvalidRequest. Whether
  ``truncate_before`` is at most the head + 1 needs the head, so the writer checks it under
  the stream's row lock.
- What is hidden is decided in SQL by one function of migration 0004, ``kafkastore_visible``:
  the reads call it in their statements, the indexer (:func:`hidden`) calls it before it
  indexes a batch, so an event the scavenger removed never comes back when old offsets are read
  again, and the subscription runtime calls it to skip hidden events. Nothing filters in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from kafkastore import pg
from kafkastore.errors import InvalidRequest
from kafkastore.records import RecordedEvent
from kafkastore.streams import MAX_AGE, MAX_POSITION, as_integer, check_no_nul

MetadataVersion = int | Literal["any"]
"""``expected_metadata_version``: ``"any"`` or the exact ``metadata_version`` (0 = never set)."""

FIELDS = ("max_count", "max_age", "truncate_before", "acl", "custom")
"""The metadata fields a write may set (a write replaces all of them; absent ones are unset)."""

ACL_ACTIONS = frozenset({"read", "write", "delete", "metadata_read", "metadata_write"})

# Of the given events, those hidden now: by the stream's metadata (the rule of migration 0004),
# or below what the scavenger removed for good.
HIDDEN = """
SELECT v.stream_id, v.version
FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) AS v(stream_id, version, created_at)
LEFT JOIN streams s ON s.stream_id = v.stream_id
LEFT JOIN scavenged g ON g.stream_id = v.stream_id
WHERE v.version < coalesce(g.below_version, 0)
   OR NOT kafkastore_visible(v.version, v.created_at, s.version, s.truncate_before, s.max_count,
                             s.max_age, s.deleted)
"""


@dataclass(frozen=True, slots=True)
class MetadataUpdate:
    """A checked metadata write: the new fields (replacing all) and its precondition."""

    expected: MetadataVersion
    max_count: int | None = None
    max_age: int | None = None
    truncate_before: int | None = None
    acl: dict[str, Any] | None = None
    custom: dict[str, Any] | None = None


def _positive(name: str, value: object, minimum: int, maximum: int = MAX_POSITION) -> int | None:
    if value is None:
        return None
    number = as_integer(value)
    if number is None:
        raise InvalidRequest(f"{name} must be an integer, got {value!r}", fields=[name])
    if number < minimum:
        raise InvalidRequest(f"{name} must be at least {minimum}, got {number}", fields=[name])
    if number > maximum:
        raise InvalidRequest(f"{name} must be at most {maximum}", fields=[name])
    return number


def _expected(value: object) -> MetadataVersion:
    if value == "any":
        return "any"
    number = as_integer(value)
    if number is None or not 0 <= number <= MAX_POSITION:
        raise InvalidRequest(
            f'expected_metadata_version must be "any" or a version >= 0, got {value!r}',
            fields=["expected_metadata_version"],
        )
    return number


def _acl(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("acl must be an object", fields=["acl"])
    unknown = set(value) - ACL_ACTIONS
    if unknown:
        raise InvalidRequest(
            f"acl has unknown actions: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(ACL_ACTIONS))})",
            fields=[f"acl.{name}" for name in sorted(unknown)],
        )
    for action, names in value.items():
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise InvalidRequest(f"acl.{action} must be a list of names", fields=[f"acl.{action}"])
        check_no_nul(names, field=f"acl.{action}")
    return dict(value)


def parse_metadata(document: Mapping[str, Any]) -> MetadataUpdate:
    """Check a metadata write: ``expected_metadata_version`` (default ``"any"``) and the
    :data:`FIELDS`; anything else is InvalidRequest."""
    unknown = set(document) - {"expected_metadata_version", *FIELDS}
    if unknown:
        raise InvalidRequest(
            f"unknown metadata fields: {', '.join(sorted(unknown))} (known: {', '.join(FIELDS)})",
            fields=sorted(unknown),
        )
    custom = document.get("custom")
    if custom is not None and not isinstance(custom, dict):
        raise InvalidRequest("custom must be a JSON object", fields=["custom"])
    check_no_nul(custom, field="custom")
    return MetadataUpdate(
        expected=_expected(document.get("expected_metadata_version", "any")),
        max_count=_positive("max_count", document.get("max_count"), 1),
        max_age=_positive("max_age", document.get("max_age"), 1, MAX_AGE),
        truncate_before=_positive("truncate_before", document.get("truncate_before"), 0),
        acl=_acl(document.get("acl")),
        custom=custom,
    )


def hidden(conn: psycopg.Connection, events: Iterable[RecordedEvent]) -> set[tuple[str, int]]:
    """``(stream_id, version)`` of the given events that no read may show now (one query)."""
    streams: list[str] = []
    versions: list[int] = []
    times: list[Any] = []
    for e in events:
        streams.append(e.stream_id)
        versions.append(e.version)
        times.append(e.created_at)
    if not streams:
        return set()
    with pg.translated():
        rows = conn.execute(HIDDEN, (streams, versions, times)).fetchall()
    return {(s, int(v)) for s, v in rows}
