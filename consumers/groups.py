"""What the console shows of the consumer groups on the events topic, and their dead letters.

:func:`groups` lists every consumer group with a committed offset on (or a member assigned to)
the events topic: its state, members, and lag per partition (high watermark - committed offset,
from Kafka). :func:`letters` reads ``<topic>.dlq`` from the beginning to its end and yields
one group's letters, with their error headers; :func:`dead_letters` is the first
:data:`MAX_LETTERS` of them (what a listing shows).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from consumers.dlq import dlq_topic
from kafkastore import kafka
from kafkastore.config import Settings

TIMEOUT = 5.0
"""Longest each admin request and watermark query may take."""
MAX_LETTERS = 1000
"""Most dead letters one listing returns (the oldest first); a replay reads them all."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of ``<topic>.dlq``: where it is, where it came from, and why."""

    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: bytes
    raw_headers: tuple[tuple[str, bytes], ...] = ()
    """The headers as sent (the event's own, then the dead-letter ones)."""

    @property
    def error(self) -> str:
        return self.headers.get("kafkastore_error", "")

    def json(self) -> dict[str, Any]:
        """The letter as the console's JSON (value as UTF-8 text when it is)."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "stream_id": self.headers.get("ce_subject"),
            "type": self.headers.get("ce_type"),
            "event_id": self.headers.get("ce_id"),
            "error": self.error,
            "attempts": self.headers.get("kafkastore_attempts"),
            "origin": {
                "topic": self.headers.get("kafkastore_topic"),
                "partition": int(self.headers.get("kafkastore_partition", "-1")),
                "offset": int(self.headers.get("kafkastore_offset", "-1")),
            },
            "headers": self.headers,
            "value": self.value.decode("utf-8", "replace"),
        }


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def watermarks(
    settings: Settings, topic: str, *, timeout: float = TIMEOUT
) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermark of ``topic``; empty when the topic does not exist."""
    consumer = kafka.consumer(settings, f"{settings.indexer_group}-console-probe")
    try:
        with kafka.translated():
            metadata = consumer.list_topics(topic, timeout=timeout)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                return {}
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                for p in sorted(described.partitions)
            }
    finally:
        consumer.close()


def groups(settings: Settings) -> list[dict[str, Any]]:
    """The consumer groups of the events topic with members and lag per partition."""
    admin = kafka.admin(settings)
    topic = settings.topic
    with kafka.translated():
        listed = admin.list_consumer_groups(request_timeout=TIMEOUT).result()
        ids = sorted(g.group_id for g in listed.valid if not g.group_id.endswith("-probe"))
        if not ids:
            return []
        descriptions = {gid: f.result() for gid, f in admin.describe_consumer_groups(ids).items()}
        committed: dict[str, dict[int, int]] = {}
        for gid in ids:
            request = [ConsumerGroupTopicPartitions(gid)]
            for f in admin.list_consumer_group_offsets(request).values():
                result = f.result()
                committed[gid] = {
                    tp.partition: tp.offset for tp in result.topic_partitions if tp.topic == topic
                }
    high = {p: hw for p, (_low, hw) in watermarks(settings, topic).items()}
    out: list[dict[str, Any]] = []
    for gid in ids:
        description = descriptions[gid]
        members = [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "host": m.host,
                "partitions": sorted(
                    tp.partition
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                    if tp.topic == topic
                ),
            }
            for m in description.members
        ]
        offsets = committed.get(gid, {})
        if not offsets and not any(m["partitions"] for m in members):
            continue  # a group of another topic
        partitions = [
            {
                "partition": p,
                "committed": offsets.get(p),
                "high_watermark": hw,
                "lag": hw - offsets[p] if offsets.get(p, -1) >= 0 else hw,
            }
            for p, hw in sorted(high.items())
        ]
        out.append(
            {
                "group": gid,
                "state": str(getattr(description.state, "name", description.state)),
                "members": members,
                "partitions": partitions,
                "lag": sum(p["lag"] for p in partitions),
            }
        )
    return out


def letters(
    settings: Settings, group: str, *, topic_name: str | None = None
) -> Generator[DeadLetter, None, None]:
    """Every message of ``<topic>.dlq`` (or of ``topic_name``) whose ``kafkastore_group`` header
    names ``group``, oldest first per partition, read from the beginning to the end the topic had
    when the read began; nothing when the topic does not exist. A generator holding a consumer:
    close it (``contextlib.closing``) when stopping early."""
    topic = topic_name or dlq_topic(settings.topic)
    marks = {p: m for p, m in watermarks(settings, topic).items() if m[1] > m[0]}
    if not marks:
        return
    consumer = kafka.consumer(settings, f"{settings.indexer_group}-console-dlq-probe")
    try:
        with kafka.translated():
            consumer.assign([TopicPartition(topic, p, low) for p, (low, _high) in marks.items()])
            remaining = dict(marks)
            while remaining:
                batch = consumer.consume(500, timeout=TIMEOUT)
                if not batch:
                    break
                for message in batch:
                    if message.error() is not None:
                        continue
                    partition, offset = message.partition() or 0, message.offset() or 0
                    if partition not in remaining or offset >= remaining[partition][1]:
                        continue  # written after the read began
                    if offset >= remaining[partition][1] - 1:
                        del remaining[partition]
                    raw = message.headers() or []
                    pairs = raw.items() if isinstance(raw, dict) else raw
                    raw_pairs = tuple(
                        (str(k), v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs
                    )
                    headers = {k: _text(v) for k, v in raw_pairs}
                    if headers.get("kafkastore_group") != group:
                        continue
                    key = message.key()
                    yield DeadLetter(
                        partition=partition,
                        offset=offset,
                        key=_text(key) if key is not None else None,
                        headers=headers,
                        value=message.value() or b"",
                        raw_headers=raw_pairs,
                    )
    finally:
        consumer.close()


def dead_letters(
    settings: Settings, group: str, *, limit: int | None = None, topic_name: str | None = None
) -> list[DeadLetter]:
    """The first ``limit`` (default :data:`MAX_LETTERS`) of :func:`letters`: what the console
    and ``kafkastore dlq list`` show."""
    limit = MAX_LETTERS if limit is None else limit
    with contextlib.closing(letters(settings, group, topic_name=topic_name)) as found:
        return list(itertools.islice(found, limit))
