"""Replaying a group's dead letters to its handler (``kafkastore dlq replay``, the console).

Each dead letter of the group in ``<topic>.dlq`` (all of them, oldest first per partition) is
decoded as the event it was and judged again by the verdict rule
(:class:`~kafkastore.verdict.VerdictResolver`): a phantom or a still-PENDING one is reported and
left. A real event that no read may show now - its stream deleted, truncated below it, beyond
``max_count`` or ``max_age``, scavenged - is skipped and reported ``hidden``, by the rule the
subscriptions use (:func:`kafkastore.lifecycle.hidden`). The others are handed to ``handler``.

Every step is recorded in ``<topic>.dlq.replayed`` (one partition; key: the letter's key;
headers: group, dead-letter partition and offset, outcome, error). What is guaranteed:

- **At most once per letter, once handed over.** Before the handler runs, an ``attempting``
  record is written and acknowledged by Kafka; then the outcome (``handled`` or ``failed``). A
  letter whose last record is ``handled`` is reported ``already-replayed``; one whose last
  record is ``attempting`` (the replay stopped while its handler ran: a crash, a kill) is
  reported ``interrupted`` and not handed over again, since the handler may have done its work.
  A letter whose handler raised (``failed``), a phantom, a pending or a hidden one may be tried
  again by a later replay.
- **One replay of a group at a time.** A replay holds a PostgreSQL advisory lock on
  (topic, group) from before it reads the records until its last one is acknowledged; a second
  replay (the CLI and the console at once, two API processes) waits for it, then sees its
  records. Two replays with different ``KAFKASTORE_DATABASE_URL`` servers are not serialised.
- What is not: a handler's own effects and its ``handled`` record are not one transaction. A
  crash between them leaves ``interrupted`` (the handler ran, not recorded), never a second run.

A handler is named ``module:function`` (the CLI's ``--handler``, or the ``dlq_handlers``
setting, ``group=module:function,...``, for the console).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consumers.dlq import dlq_topic
from consumers.groups import DeadLetter, letters
from kafkastore import codec, kafka, lifecycle, pg, topic
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
    """``handled``, ``failed``, ``phantom``, ``pending``, ``hidden``, ``already-replayed`` or
    ``interrupted`` (and ``attempting``, only in the records)."""
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


REPLAY_LOCK_SPACE = 0x6B617264  # "kard"
"""The classid of the advisory lock a replay holds on (topic, group) while it runs."""
LOCK_REPLAY = "SELECT pg_advisory_lock(%s, hashtext(%s))"
RECORD_TIMEOUT = 30.0
"""How long a replay waits for Kafka to acknowledge one of its records."""
SETTLED = frozenset({"handled", "already-replayed", "hidden"})
"""Outcomes that leave nothing to do (``kafkastore dlq replay`` exits 0 when all are)."""
FINAL = {"handled": "already-replayed", "attempting": "interrupted"}
"""A letter's last recorded outcome -> what a replay reports instead of handing it over."""


def replay_states(settings: Settings, group: str) -> dict[tuple[int, int], str]:
    """``(partition, offset)`` of each of the group's letters a replay recorded -> its last
    recorded outcome, from every record of ``<topic>.dlq.replayed`` (one entry per letter)."""
    states: dict[tuple[int, int], str] = {}
    for record in letters(settings, group, topic_name=replayed_topic(settings.topic)):
        where = (
            int(record.headers.get("kafkastore_dlq_partition", "-1")),
            int(record.headers.get("kafkastore_dlq_offset", "-1")),
        )
        states[where] = record.headers.get("kafkastore_outcome", "")
    return states


def replay(settings: Settings, group: str, handler: Handler) -> list[Replayed]:
    """Replay every dead letter of ``group`` to ``handler`` (see the module docstring)."""
    key = f"{settings.topic} {group}"  # a topic name has no space
    # The lock is the connection's (session-level): closing it at the end, or losing it in a
    # crash, releases it.
    with pg.connect(settings.database_url, autocommit=True) as conn:
        with pg.translated():
            conn.execute(LOCK_REPLAY, (REPLAY_LOCK_SPACE, key))
        return _replay_locked(conn, settings, group, handler)


def _replay_locked(conn: Any, settings: Settings, group: str, handler: Handler) -> list[Replayed]:
    states = replay_states(settings, group)
    resolver = VerdictResolver(pg.system_identifier(conn))
    results: list[Replayed] = []
    seen: set[tuple[int, int]] = set()
    recorder: _Recorder | None = None
    try:
        with contextlib.closing(letters(settings, group)) as found:
            for letter in found:
                where = (letter.partition, letter.offset)
                if where in seen:
                    continue
                seen.add(where)
                stream_id, event_id = letter.headers.get("ce_subject"), letter.headers.get("ce_id")
                if states.get(where) in FINAL:
                    results.append(Replayed(*where, stream_id, event_id, FINAL[states[where]]))
                    continue
                recorder = recorder or _Recorder(settings, group)
                results.append(_replay_one(conn, resolver, letter, handler, recorder))
    finally:
        if recorder is not None:
            recorder.close()
    return results


def _replay_one(
    conn: Any,
    resolver: VerdictResolver,
    letter: DeadLetter,
    handler: Handler,
    recorder: _Recorder,
) -> Replayed:
    where = (letter.partition, letter.offset)
    stream_id, event_id = letter.headers.get("ce_subject"), letter.headers.get("ce_id")

    def outcome(name: str, error: str = "") -> Replayed:
        result = Replayed(*where, stream_id, event_id, name, error)
        recorder.record(result)
        return result

    try:
        wire = codec.decode(_Origin(letter))  # type: ignore[arg-type]
    except codec.MalformedMessage as exc:
        return outcome("phantom", str(exc))
    (judgement,) = resolver.judge_until_settled(conn, [wire], timeout=JUDGE_TIMEOUT)
    if judgement.verdict is Verdict.PENDING:
        return outcome("pending")
    if judgement.verdict is not Verdict.REAL:
        return outcome("phantom", judgement.reason.value if judgement.reason else "")
    event = wire.recorded()
    if lifecycle.hidden(conn, [event]):
        return outcome("hidden", "no read may show the event now (stream lifecycle)")
    recorder.record(Replayed(*where, stream_id, event_id, "attempting"), wait=True)
    try:
        handler(event)
    except Exception as exc:  # the handler is the user's: any failure is an outcome
        logger.warning("replay of %s/%s failed again: %s", *where, exc)
        return outcome("failed", f"{type(exc).__name__}: {exc}")
    return outcome("handled")


class _Recorder:
    """The producer of one replay's records in ``<topic>.dlq.replayed``."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.group = group
        self.name = replayed_topic(settings.topic)
        topic.ensure_topic(settings.replace(topic=self.name, partitions=1), partitions=1)
        self.producer = kafka.producer(settings)
        self.errors: list[str] = []

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))

    def record(self, r: Replayed, *, wait: bool = False) -> None:
        """Queue ``r``'s record; with ``wait``, return once Kafka acknowledged it (and every
        record before it), else raise Unavailable."""
        with kafka.translated():
            self.producer.produce(
                self.name,
                key=(r.stream_id or "").encode(),
                value=b"",
                headers=[
                    ("kafkastore_group", self.group.encode()),
                    ("kafkastore_dlq_partition", str(r.partition).encode()),
                    ("kafkastore_dlq_offset", str(r.offset).encode()),
                    ("kafkastore_outcome", r.outcome.encode()),
                    ("kafkastore_error", r.error.encode()[:4096]),
                    ("kafkastore_replayed_at", datetime.now(UTC).isoformat().encode()),
                    ("ce_id", (r.event_id or "").encode()),
                ],
                on_delivery=self._delivered,
            )
        if wait:
            self.flush()

    def flush(self) -> None:
        with kafka.translated():
            left = self.producer.flush(RECORD_TIMEOUT)
        if left or self.errors:
            raise Unavailable(f"could not record the replay in {self.name!r}: {self.errors}")

    def close(self) -> None:
        self.flush()
