"""Test helpers that put real-looking events (and phantoms) on the events topic.

:class:`ManualWriter` follows the append protocol of docs/design.md section 2 by hand - BEGIN,
``pg_current_xact_id()``, lock/advance the stream head, insert the ``appends`` marker, produce
with :func:`kafkastore.codec.encode_headers`, flush (every ack), COMMIT - so consumer and indexer
tests do not depend on the writer package. Its ``phantom_*`` methods produce the messages the
verdict rule must reject:

- ``phantom_aborted``: marker written, events produced, then ROLLBACK (a writer that died).
- ``phantom_committed_xid``: events produced in a transaction that COMMITs without a marker
  (what a reused xid that reads ``committed`` looks like).
- ``phantom_forged``: the headers of a committed write, but an event id its marker does not list.
- ``phantom_foreign``: a committed write's headers with another cluster's system identifier.
- ``malformed``: a message without our headers.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from confluent_kafka import Message, Producer

from kafkastore import codec, kafka, pg
from kafkastore.config import Settings
from kafkastore.streams import category_of, new_event_id

LOCK_HEAD = """
INSERT INTO streams (stream_id, category) VALUES (%s, %s) ON CONFLICT (stream_id) DO NOTHING
"""
SELECT_HEAD = "SELECT version FROM streams WHERE stream_id = %s FOR UPDATE"
UPDATE_HEAD = "UPDATE streams SET version = %s, updated_at = now() WHERE stream_id = %s"
INSERT_MARKER = """
INSERT INTO appends (write_id, xid, stream_id, from_version, to_version, event_ids, partition,
                     offsets)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""


@dataclass(frozen=True, slots=True)
class Produced:
    """One message this helper put on the topic."""

    event_id: UUID
    stream_id: str
    version: int
    type: str
    data: Any
    partition: int
    offset: int
    write_id: UUID


class ManualWriter:
    """Writes events the way the writer does, one stream per call. Not thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: Producer = kafka.producer(settings, **{"linger.ms": 0})
        self.conn = pg.connect(settings.database_url)
        self.sysid = pg.system_identifier(self.conn)
        self.conn.commit()

    def close(self) -> None:
        self.producer.flush(10)
        self.conn.close()

    def __enter__(self) -> ManualWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol ------------------------------------------------------------------------

    def append(self, stream_id: str, events: Sequence[tuple[str, Any]]) -> list[Produced]:
        """Commit ``events`` (type, data) to ``stream_id``; return where they landed."""
        with self._write(stream_id, events) as produced:
            pass
        return produced

    @contextlib.contextmanager
    def _write(
        self,
        stream_id: str,
        events: Sequence[tuple[str, Any]],
        *,
        marker: bool = True,
        sysid: str | None = None,
        commit: bool = True,
    ) -> Iterator[list[Produced]]:
        conn = self.conn
        write_id = uuid.uuid4()
        try:
            xid = int(conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0])  # type: ignore[index]
            conn.execute(LOCK_HEAD, (stream_id, category_of(stream_id)))
            head = int(conn.execute(SELECT_HEAD, (stream_id,)).fetchone()[0])  # type: ignore[index]
            ids = [new_event_id() for _ in events]
            versions = [head + i + 1 for i in range(len(events))]
            produced = self._produce(
                stream_id, events, ids, versions, write_id, xid, sysid or self.sysid
            )
            if marker:
                conn.execute(UPDATE_HEAD, (versions[-1], stream_id))
                conn.execute(
                    INSERT_MARKER,
                    (
                        write_id,
                        str(xid),
                        stream_id,
                        versions[0],
                        versions[-1],
                        ids,
                        produced[0].partition,
                        [p.offset for p in produced],
                    ),
                )
            yield produced
            if commit:
                conn.commit()
            else:
                conn.rollback()
        except BaseException:
            conn.rollback()
            raise

    def _produce(
        self,
        stream_id: str,
        events: Sequence[tuple[str, Any]],
        ids: Sequence[UUID],
        versions: Sequence[int],
        write_id: UUID,
        xid: int,
        sysid: str,
        *,
        event_ids_in_headers: Sequence[UUID] | None = None,
    ) -> list[Produced]:
        reports: dict[int, Message] = {}
        errors: list[Any] = []
        now = codec.format_time(datetime.now(UTC))
        header_ids = event_ids_in_headers or ids
        for i, (event_type, data) in enumerate(events):
            value, content_type = codec.encode_payload(data, None)
            headers = codec.encode_headers(
                event_id=header_ids[i],
                event_type=event_type,
                stream_id=stream_id,
                version=versions[i],
                content_type=content_type,
                source=self.settings.source,
                time=now,
                write_id=str(write_id),
                xid=xid,
                sysid=sysid,
                metadata=None,
                metadata_json=None,
            )

            def report(err: Any, msg: Message, i: int = i) -> None:
                if err is not None:
                    errors.append(err)
                else:
                    reports[i] = msg

            self.producer.produce(
                self.settings.topic,
                key=stream_id.encode(),
                value=value,
                headers=list(headers),
                on_delivery=report,
            )
        self.producer.flush(30)
        if errors or len(reports) != len(events):
            raise RuntimeError(f"produce failed: {errors}")
        return [
            Produced(
                event_id=header_ids[i],
                stream_id=stream_id,
                version=versions[i],
                type=events[i][0],
                data=events[i][1],
                partition=reports[i].partition() or 0,
                offset=reports[i].offset() or 0,
                write_id=write_id,
            )
            for i in range(len(events))
        ]

    # -- phantoms ----------------------------------------------------------------------------

    def phantom_aborted(self, stream_id: str, events: Sequence[tuple[str, Any]]) -> list[Produced]:
        """Marker written and events produced, then ROLLBACK: the xid reads ``aborted``."""
        with self._write(stream_id, events, commit=False) as produced:
            pass
        return produced

    def phantom_committed_xid(
        self, stream_id: str, events: Sequence[tuple[str, Any]]
    ) -> list[Produced]:
        """Events produced in a transaction that COMMITs without a marker (``committed`` xid)."""
        with self._write(stream_id, events, marker=False) as produced:
            pass
        return produced

    def phantom_forged(self, stream_id: str, event: tuple[str, Any]) -> tuple[Produced, Produced]:
        """Commit one real event, then produce a copy of its headers naming another event id.

        Returns (real, forged)."""
        (real,) = self.append(stream_id, [event])
        xid = int(
            self.conn.execute(
                "SELECT xid::text FROM appends WHERE write_id = %s", (real.write_id,)
            ).fetchone()[0]  # type: ignore[index]
        )
        self.conn.commit()
        (forged,) = self._produce(
            stream_id,
            [event],
            [new_event_id()],
            [real.version],
            real.write_id,
            xid,
            self.sysid,
        )
        return real, forged

    def phantom_foreign(self, stream_id: str, event: tuple[str, Any]) -> Produced:
        """A committed marker, but the message names another cluster's system identifier."""
        with self._write(stream_id, [event], sysid="7000000000000000001") as produced:
            pass
        return produced[0]

    def malformed(self, stream_id: str, value: bytes = b"not an event") -> tuple[int, int]:
        """A message without our headers; returns (partition, offset)."""
        out: list[Message] = []
        self.producer.produce(
            self.settings.topic,
            key=stream_id.encode(),
            value=value,
            on_delivery=lambda err, msg: out.append(msg),
        )
        self.producer.flush(30)
        return out[0].partition() or 0, out[0].offset() or 0

    @contextlib.contextmanager
    def pending(
        self, stream_id: str, events: Sequence[tuple[str, Any]], *, commit: bool = True
    ) -> Iterator[list[Produced]]:
        """Produce events and keep the writer's transaction open until the block ends."""
        with self._write(stream_id, events, commit=commit) as produced:
            yield produced


def open_connection(settings: Settings) -> psycopg.Connection:
    return pg.connect(settings.database_url, autocommit=True)
