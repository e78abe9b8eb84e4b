"""``kafkastore audit``: prove that the commit markers, the Kafka topic and the index agree.

The audit reads the topic from the low to the high watermarks taken at its start (writes that
land meanwhile are left for the next run), then checks:

1. every commit marker's events are in Kafka (same event id, write id, stream and version);
2. every marker's event whose offset the indexer has passed (``index_checkpoints``) is in the
   index at its stream and version, with its id;
3. every index row has a marker listing it, and the Kafka message at its partition/offset is
   that event (so no phantom, forged or foreign message was indexed);
4. versions are contiguous per stream in the index (from 1, or from what the scavenger
   removed), stream heads match their markers;
5. global positions are gap-free (1..``index_head.last_position``), counting the positions of
   the rows the scavenger removed (``scavenged.removed``).

Deleted and truncated streams (docs/http.md "Stream lifecycle") are healthy: a marker's event
that is hidden now (the rule of migration 0004; ``committed_at`` stands in for the event's time) or
below what the scavenger removed is not expected in the index; an index row that is there must
still be exactly its marker's event.

It exits 1 naming every kind of finding (with examples), 0 when all agree. Assumes one topic per
database, as in production (markers have no topic column).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TextIO
from uuid import UUID

from confluent_kafka import KafkaError, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from kafkastore import codec, kafka, pg
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError

EXAMPLES = 10
"""Examples printed per kind of finding."""

MARKERS = """
SELECT write_id, stream_id, from_version, event_ids, partition, offsets FROM appends
"""
CHECKPOINTS = "SELECT partition, next_offset FROM index_checkpoints WHERE topic = %s"
# Marker events the indexer has passed but that are missing or different in the index.
MARKED_NOT_INDEXED = """
SELECT a.stream_id, a.from_version + o.i - 1, o.id, e.event_id
FROM appends a
CROSS JOIN LATERAL unnest(a.event_ids) WITH ORDINALITY AS o(id, i)
JOIN index_checkpoints c ON c.topic = %s AND c.partition = a.partition
LEFT JOIN events e ON e.stream_id = a.stream_id AND e.version = a.from_version + o.i - 1
LEFT JOIN streams s ON s.stream_id = a.stream_id
LEFT JOIN scavenged g ON g.stream_id = a.stream_id
WHERE a.offsets[o.i] < c.next_offset AND e.event_id IS DISTINCT FROM o.id
  AND (e.event_id IS NOT NULL
       OR (a.from_version + o.i - 1 >= coalesce(g.below_version, 0)
           AND kafkastore_visible(a.from_version + o.i - 1, a.committed_at, s.version,
                                  s.truncate_before, s.max_count, s.max_age, s.deleted)))
"""
INDEXED_WITHOUT_MARKER = """
SELECT e.global_position, e.stream_id, e.version, e.event_id
FROM events e
LEFT JOIN appends a ON a.write_id = e.write_id AND a.stream_id = e.stream_id
WHERE a.write_id IS NULL OR e.version NOT BETWEEN a.from_version AND a.to_version
   OR a.event_ids[e.version - a.from_version + 1] <> e.event_id
"""
INDEX_ROWS = """
SELECT partition, "offset", event_id, write_id, stream_id, version, global_position FROM events
"""
NOT_CONTIGUOUS = """
SELECT e.stream_id, min(e.version), max(e.version), count(*)
FROM events e LEFT JOIN scavenged g ON g.stream_id = e.stream_id
GROUP BY e.stream_id, g.below_version
HAVING min(e.version) <> greatest(coalesce(g.below_version, 1), 1)
    OR max(e.version) - min(e.version) + 1 <> count(*)
"""
HEAD_MISMATCH = """
SELECT s.stream_id, s.version, m.top
FROM streams s
LEFT JOIN (SELECT stream_id, max(to_version) AS top FROM appends GROUP BY stream_id) m
  ON m.stream_id = s.stream_id
WHERE s.version <> coalesce(m.top, 0)
"""
POSITIONS = """
SELECT count(*) + (SELECT coalesce(sum(removed), 0) FROM scavenged),
       coalesce(max(global_position), 0), (SELECT last_position FROM index_head)
FROM events
"""
INDEXED_PHANTOMS = """
SELECT e.stream_id, e.version, p.partition, p."offset"
FROM phantoms p JOIN events e ON e.partition = p.partition AND e."offset" = p."offset"
WHERE p.topic = %s
"""


@dataclass(frozen=True, slots=True)
class _Message:
    event_id: UUID | None
    write_id: UUID | None
    stream_id: str | None
    version: int | None
    foreign: bool


@dataclass(slots=True)
class Findings:
    """What the audit found wrong, by kind."""

    kinds: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if len(self.kinds[kind]) < EXAMPLES:
            self.kinds[kind].append(detail)

    def __bool__(self) -> bool:
        return bool(self.counts)


def run(settings: Settings, *, timeout: float, out: TextIO) -> int:
    """Audit the store; print a report on ``out``; 0 when markers, Kafka and index agree."""
    console = Console(stderr=True)
    findings = Findings()
    messages, highs, complete = _read_topic(settings, timeout, console)
    if not complete:
        findings.add("incomplete", f"the topic could not be read to its end within {timeout}s")
    with pg.connect(settings.database_url, autocommit=True) as conn, pg.translated():
        sysid = pg.system_identifier(conn)
        checkpoints: dict[int, int] = dict(conn.execute(CHECKPOINTS, (settings.topic,)).fetchall())
        by_event: dict[UUID, list[_Message]] = defaultdict(list)
        for message in messages.values():
            if message.event_id is not None:
                by_event[message.event_id].append(message)
        markers = 0
        # The last offset the audit read, per partition (-1 for an empty one).
        high = {p: h - 1 for p, h in highs.items()}
        for write_id, stream_id, from_version, event_ids, partition, offsets in conn.execute(
            MARKERS
        ):
            markers += 1
            for i, event_id in enumerate(event_ids):
                offset = offsets[i] if offsets and i < len(offsets) else None
                if offset is not None and offset > high.get(partition, -1):
                    continue  # written after the audit read the topic
                version = from_version + i
                if not any(
                    m.write_id == write_id and m.stream_id == stream_id and m.version == version
                    for m in by_event.get(event_id, ())
                ):
                    findings.add(
                        "marker event missing from Kafka",
                        f"{stream_id} v{version} id {event_id} (write {write_id})",
                    )
        for stream_id, version, want, have in conn.execute(MARKED_NOT_INDEXED, (settings.topic,)):
            findings.add(
                "marker event missing from the index",
                f"{stream_id} v{version}: marker lists {want}, index has {have}",
            )
        for position, stream_id, version, event_id in conn.execute(INDEXED_WITHOUT_MARKER):
            findings.add(
                "index row without a marker",
                f"position {position}: {stream_id} v{version} id {event_id}",
            )
        rows = 0
        for partition, offset, event_id, write_id, stream_id, version, position in conn.execute(
            INDEX_ROWS
        ):
            rows += 1
            m = messages.get((partition, offset))
            if m is None:
                if offset <= high.get(partition, -1) or not complete:
                    findings.add(
                        "index row without a Kafka message",
                        f"position {position}: {stream_id} v{version} at {partition}/{offset}",
                    )
            elif m.foreign or (m.event_id, m.write_id, m.stream_id, m.version) != (
                event_id,
                write_id,
                stream_id,
                version,
            ):
                findings.add(
                    "index row differs from its Kafka message",
                    f"position {position}: {stream_id} v{version} id {event_id} at "
                    f"{partition}/{offset}",
                )
        for stream_id, version, partition, offset in conn.execute(
            INDEXED_PHANTOMS, (settings.topic,)
        ):
            findings.add("phantom indexed", f"{stream_id} v{version} at {partition}/{offset}")
        for stream_id, low, top, count in conn.execute(NOT_CONTIGUOUS):
            findings.add(
                "versions not contiguous",
                f"{stream_id}: versions {low}..{top} but {count} events indexed",
            )
        for stream_id, head, top in conn.execute(HEAD_MISMATCH):
            findings.add(
                "stream head disagrees with its markers",
                f"{stream_id}: head {head}, markers end at {top}",
            )
        count, top, last = conn.execute(POSITIONS).fetchone() or (0, 0, 0)
        if count != last or top > last:
            findings.add(
                "global positions not gap-free",
                f"{count} rows and scavenged positions, highest position {top}, index_head {last}",
            )
    _report(out, findings, settings, sysid, markers, len(messages), rows, checkpoints)
    return 1 if findings else 0


def _report(  # noqa: PLR0917 - one caller
    out: TextIO,
    findings: Findings,
    settings: Settings,
    sysid: str,
    markers: int,
    messages: int,
    rows: int,
    checkpoints: dict[int, int],
) -> None:
    print(
        f"audit of topic {settings.topic!r} (cluster {sysid}): {messages} Kafka messages, "
        f"{markers} commit markers, {rows} index rows, index checkpoints {checkpoints}",
        file=out,
    )
    if not findings:
        print("OK: markers, Kafka and the index agree", file=out)
        return
    for kind, count in findings.counts.items():
        print(f"FAIL {kind}: {count}", file=out)
        for detail in findings.kinds[kind]:
            print(f"  - {detail}", file=out)


def _read_topic(
    settings: Settings, timeout: float, console: Console
) -> tuple[dict[tuple[int, int], _Message], dict[int, int], bool]:
    """Every message below the high watermarks taken now, decoded; the high watermarks; and
    whether all were read."""
    sysid = _sysid(settings)
    consumer = kafka.consumer(
        settings, f"kafkastore-audit-{uuid.uuid4().hex[:12]}", **{"enable.partition.eof": True}
    )
    messages: dict[tuple[int, int], _Message] = {}
    with contextlib.closing(consumer), kafka.translated():
        metadata = consumer.list_topics(settings.topic, timeout=10)
        topic = metadata.topics.get(settings.topic)
        if topic is None or topic.error is not None:
            raise ConfigurationError(f"topic {settings.topic!r} does not exist")
        bounds = {}
        highs = {}
        for p in sorted(topic.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic, p), timeout=10, cached=False
            )
            highs[p] = high
            if high > low:
                bounds[p] = (low, high)
        total = sum(h - lo for lo, h in bounds.values())
        consumer.assign([TopicPartition(settings.topic, p, lo) for p, (lo, _h) in bounds.items()])
        pending = set(bounds)
        deadline = time.monotonic() + timeout
        with Progress(
            TextColumn("reading {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(settings.topic, total=total)
            while pending and time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=0.5):
                    p, offset = msg.partition(), msg.offset()
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF and p is not None:
                            pending.discard(p)
                        continue
                    if p is None or p not in bounds or offset is None or offset >= bounds[p][1]:
                        continue
                    messages[(p, offset)] = _decode(msg, sysid)  # type: ignore[arg-type]
                    progress.advance(task)
                    if offset >= bounds[p][1] - 1:
                        pending.discard(p)
        return messages, highs, not pending


def _sysid(settings: Settings) -> str:
    with pg.connect(settings.database_url, autocommit=True) as conn:
        return pg.system_identifier(conn)


def _decode(msg: codec.KafkaMessage, sysid: str) -> _Message:
    try:
        e = codec.decode(msg)
    except codec.MalformedMessage:
        return _Message(None, None, None, None, foreign=False)
    return _Message(e.event_id, e.write_id, e.stream_id, e.version, foreign=e.sysid != sysid)
