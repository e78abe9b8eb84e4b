"""Replaying a group's dead letters to its handler (``kafkastore dlq replay``, the console).

Each dead letter of the group in ``<topic>.dlq`` is decoded as the event it was, judged again
by the verdict rule (:class:`~kafkastore.verdict.VerdictResolver`: only a REAL event reaches
the handler; a phantom or a still-PENDING one is reported and left), and handed to ``handler``
once. Every attempt is recorded in ``<topic>.dlq.replayed`` (key: the letter's key; headers:
group, dead-letter partition and offset, outcome, error), and letters whose replay already
succeeded are skipped: within one request each letter is tried at most once, and a letter that
was handled is never handed over again.

A handler is named ``module:function`` (the CLI's ``--handler``, or the ``dlq_handlers``
setting, ``group=module:function,...``, for the console).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consumers.dlq import dlq_topic
from consumers.groups import DeadLetter, dead_letters
from kafkastore import codec, kafka, pg, topic
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError, Unavailable
from kafkastore.records import RecordedEvent
from kafkastore.verdict import Verdict, VerdictResolver

logger = logging.getLogger("kafkastore.consumers")

Handler = Callable[[RecordedEvent], Any]
JUDGE_TIMEOUT = 5.0
"""How long a replay waits for an event whose writer may still commit."""


def replayed_topic(events_topic: str) -> str:
    """Where replays are recorded: ``<topic>.dlq.replayed``."""
    return dlq_topic(events_topic) + ".replayed"


@dataclass(frozen=True, slots=True)
class Replayed:
    """What one replay did with one dead letter."""

    partition: int
    offset: int
    stream_id: str | None
    event_id: str | None
    outcome: str
    """``handled``, ``failed``, ``phantom``, ``pending`` or ``already-replayed``."""
    error: str = ""

    def json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "stream_id": self.stream_id,
            "event_id": self.event_id,
            "outcome": self.outcome,
            "error": self.error,
        }


def resolve_handler(name: str) -> Handler:
    """``module:function`` -> the function."""
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise ConfigurationError(f"a handler is named module:function, not {name!r}")
    try:
        handler: Handler = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load the handler {name!r}: {exc}") from exc
    return handler


def handler_of(settings: Settings, group: str) -> Handler:
    """The group's handler from the ``dlq_handlers`` setting (ConfigurationError when none)."""
    name = settings.dlq_handlers.get(group)
    if not name:
        raise ConfigurationError(
            f"no handler for group {group!r}: set KAFKASTORE_DLQ_HANDLERS={group}=module:function"
        )
    return resolve_handler(name)


class _Origin:
    """A dead letter seen as the message it copied (for :func:`kafkastore.codec.decode`)."""

    def __init__(self, letter: DeadLetter) -> None:
        self._letter = letter

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._letter.raw_headers)

    def value(self) -> bytes:
        return self._letter.value

    def partition(self) -> int:
        return int(self._letter.headers.get("kafkastore_partition", "0"))

    def offset(self) -> int:
        return int(self._letter.headers.get("kafkastore_offset", "0"))


def already_replayed(settings: Settings, group: str) -> set[tuple[int, int]]:
    """``(partition, offset)`` of the group's letters whose replay was handled."""
    done: set[tuple[int, int]] = set()
    for record in dead_letters(settings, group, topic_name=replayed_topic(settings.topic)):
        if record.headers.get("kafkastore_outcome") == "handled":
            done.add(
                (
                    int(record.headers.get("kafkastore_dlq_partition", "-1")),
                    int(record.headers.get("kafkastore_dlq_offset", "-1")),
                )
            )
    return done


def replay(settings: Settings, group: str, handler: Handler) -> list[Replayed]:
    """Replay every dead letter of ``group`` to ``handler`` (see the module docstring)."""
    letters = dead_letters(settings, group)
    done = already_replayed(settings, group)
    results: list[Replayed] = []
    seen: set[tuple[int, int]] = set()
    with pg.connect(settings.database_url, autocommit=True) as conn:
        resolver = VerdictResolver(pg.system_identifier(conn))
        for letter in letters:
            where = (letter.partition, letter.offset)
            if where in seen:
                continue
            seen.add(where)
            stream_id, event_id = letter.headers.get("ce_subject"), letter.headers.get("ce_id")
            if where in done:
                results.append(Replayed(*where, stream_id, event_id, "already-replayed"))
                continue
            results.append(_replay_one(conn, resolver, letter, handler))
    _record(settings, group, [r for r in results if r.outcome != "already-replayed"])
    return results


def _replay_one(
    conn: Any, resolver: VerdictResolver, letter: DeadLetter, handler: Handler
) -> Replayed:
    where = (letter.partition, letter.offset)
    stream_id, event_id = letter.headers.get("ce_subject"), letter.headers.get("ce_id")
    try:
        wire = codec.decode(_Origin(letter))  # type: ignore[arg-type]
    except codec.MalformedMessage as exc:
        return Replayed(*where, stream_id, event_id, "phantom", str(exc))
    (judgement,) = resolver.judge_until_settled(conn, [wire], timeout=JUDGE_TIMEOUT)
    if judgement.verdict is Verdict.PENDING:
        return Replayed(*where, stream_id, event_id, "pending")
    if judgement.verdict is not Verdict.REAL:
        reason = judgement.reason.value if judgement.reason else ""
        return Replayed(*where, stream_id, event_id, "phantom", reason)
    try:
        handler(wire.recorded())
    except Exception as exc:  # the handler is the user's: any failure is an outcome
        logger.warning("replay of %s/%s failed again: %s", *where, exc)
        return Replayed(*where, stream_id, event_id, "failed", f"{type(exc).__name__}: {exc}")
    return Replayed(*where, stream_id, event_id, "handled")


def _record(settings: Settings, group: str, results: list[Replayed]) -> None:
    if not results:
        return
    name = replayed_topic(settings.topic)
    topic.ensure_topic(settings.replace(topic=name, partitions=1), partitions=1)
    producer = kafka.producer(settings)
    now = datetime.now(UTC).isoformat()
    with kafka.translated():
        for r in results:
            producer.produce(
                name,
                key=(r.stream_id or "").encode(),
                value=b"",
                headers=[
                    ("kafkastore_group", group.encode()),
                    ("kafkastore_dlq_partition", str(r.partition).encode()),
                    ("kafkastore_dlq_offset", str(r.offset).encode()),
                    ("kafkastore_outcome", r.outcome.encode()),
                    ("kafkastore_error", r.error.encode()[:4096]),
                    ("kafkastore_replayed_at", now.encode()),
                    ("ce_id", (r.event_id or "").encode()),
                ],
            )
        if producer.flush(30):
            raise Unavailable(f"could not record the replay in {name!r}")
