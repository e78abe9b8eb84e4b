"""The append protocol of DESIGN.md section 2: one PostgreSQL transaction per batch.

    1. BEGIN; write_id := new UUID; xid := pg_current_xact_id().
    2. Create missing stream rows and lock every target row, in stream-id order (one upsert
       ordered by stream id: concurrent batches take row locks in the same order, so they never
       deadlock; two writers creating one new stream serialise on the insert).
    3. Check expected versions (API.md's four modes) and event-id idempotency (section 5);
       assign versions.
    4. Produce every accepted event with ce_pgwrite/ce_pgxid/ce_pgsysid; await EVERY report.
    5. Update the heads, insert the commit marker (``appends`` rows, offsets included), COMMIT.
       Any failed or missing report -> ROLLBACK -> Unavailable (retriable). A lost COMMIT reply
       is settled through the marker on a fresh connection, else OutcomeUnknown.

The heads and the marker are written after the acks and before COMMIT, in one pipelined round
trip with it: nothing of the transaction is visible before COMMIT, so when they are written
inside it does not change what readers can see; the row locks of step 2 are what serialise
writers. Why the whole thing is correct:

- A writer that dies anywhere before COMMIT leaves an aborted transaction: heads unchanged, no
  marker; its produced events are phantoms to the verdict rule (kafkastore.verdict).
- A send that times out but lands later lands without a marker: a phantom.
- Per-stream Kafka order equals version order: the next append to a stream gets the head's row
  lock only after the previous append committed, which was after all its acks.
- The ladder lock_timeout < message.timeout.ms < idle_in_transaction_session_timeout makes a
  stuck writer abort rather than hold heads forever.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
import psycopg.errors

from kafkastore import pg
from kafkastore.codec import encode_headers, format_time
from kafkastore.config import Settings
from kafkastore.errors import (
    AppendConflicts,
    DuplicateEventId,
    KafkaStoreError,
    OutcomeUnknown,
    StreamDeleted,
    Unavailable,
    WrongExpectedVersion,
)
from kafkastore.records import AppendResult, EventPosition, ExpectedVersion
from kafkastore.verdict import XID_STATUS
from writer.delivery import DeliveryTracker, SharedProducer
from writer.prepare import PreparedAppend

logger = logging.getLogger("kafkastore.writer")

APPLICATION_NAME = "kafkastore-writer"

FaultHook = Callable[[str], None]
"""Called with a step name ("locked", "produced", "acked", "before_commit"); tests inject faults."""

LOCK_STREAMS = """
INSERT INTO streams AS s (stream_id, category)
SELECT id, split_part(id, '-', 1) FROM unnest(%s::text[]) AS id ORDER BY id
ON CONFLICT (stream_id) DO UPDATE SET updated_at = s.updated_at
RETURNING stream_id, version, deleted
"""
CURRENT_XID = "SELECT pg_current_xact_id()::text"
# Client-supplied event ids are locked (transaction-scoped advisory locks, in one global order,
# after the stream locks) before they are looked up: two concurrent appends reusing one id on
# different streams serialise here, so the second sees the first's committed marker. No deadlock:
# a transaction takes id locks only once it holds all its stream locks, and ids in sorted order.
EVENT_ID_LOCK_SPACE = 0x6B617673  # "kavs": the classid of our advisory locks on event ids
LOCK_EVENT_IDS = """
SELECT count(pg_advisory_xact_lock(%(space)s, k))
FROM (SELECT DISTINCT hashtext(id::text) AS k FROM unnest(%(ids)s::uuid[]) AS id ORDER BY 1) AS t
"""
# Markers holding any of the given (client-supplied) event ids; the ordinality of event_ids
# gives each id's version.
FIND_EVENT_IDS = """
SELECT a.stream_id, a.from_version + (x.ord - 1), x.id, a.partition,
       (a.offsets)[x.ord], a.write_id
FROM appends a, unnest(a.event_ids) WITH ORDINALITY AS x(id, ord)
WHERE a.event_ids && %(ids)s::uuid[] AND x.id = ANY(%(ids)s::uuid[])
"""
UPDATE_HEADS = """
UPDATE streams s SET version = u.version, updated_at = now()
FROM unnest(%s::text[], %s::bigint[]) AS u(stream_id, version)
WHERE s.stream_id = u.stream_id
"""
# One marker row per stream: its slice of the flat id/offset arrays.
INSERT_MARKERS = """
INSERT INTO appends (write_id, xid, stream_id, from_version, to_version, event_ids, partition,
                     offsets)
SELECT %(write_id)s, %(xid)s::xid8, r.stream_id, r.from_version, r.to_version,
       (%(ids)s::uuid[])[r.lo:r.hi], r.partition, (%(offsets)s::bigint[])[r.lo:r.hi]
FROM unnest(%(streams)s::text[], %(froms)s::bigint[], %(tos)s::bigint[], %(los)s::int[],
            %(his)s::int[], %(partitions)s::int[])
     AS r(stream_id, from_version, to_version, lo, hi, partition)
"""
MARKER_EXISTS = "SELECT EXISTS (SELECT 1 FROM appends WHERE write_id = %s)"


@dataclass(slots=True, eq=False)
class Unit:
    """What one caller submitted: one append, or several forming an atomic multi-stream append."""

    appends: tuple[PreparedAppend, ...]
    atomic: bool
    size: int
    results: list[AppendResult] | None = None
    error: KafkaStoreError | None = None
    # Filled while deciding: (append index, from_version) of accepted appends; the results of
    # appends that repeat committed ones; appends that repeat an append earlier in this batch.
    accepted: list[tuple[int, int]] = field(default_factory=list)
    outcomes: dict[int, AppendResult] = field(default_factory=dict)
    mirrors: dict[int, tuple[Unit, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Found:
    stream_id: str
    version: int
    partition: int | None
    offset: int | None


def check_expected(stream_id: str, expected: ExpectedVersion, current: int) -> None:
    if expected == "any":
        return
    ok = (
        current == 0
        if expected == "no_stream"
        else current >= 1
        if expected == "exists"
        else current == expected
    )
    if not ok:
        raise WrongExpectedVersion(stream_id, expected, current)


class BatchRunner:
    """Runs batches of units through the protocol on one connection (one worker thread)."""

    def __init__(
        self,
        settings: Settings,
        producer: SharedProducer,
        sysid: str,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.sysid = sysid
        self.fault_hook = fault_hook
        self._topic = settings.topic
        self._source = settings.source
        self.conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = pg.connect(self.settings.database_url, application_name=APPLICATION_NAME)
            with pg.translated():
                pg.set_session_timeouts(
                    self.conn,
                    lock_timeout=self.settings.lock_timeout,
                    statement_timeout=self.settings.statement_timeout,
                    idle_timeout=self.settings.idle_in_transaction_timeout,
                )
                self.conn.commit()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _hook(self, step: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(step)

    def run(self, units: Sequence[Unit]) -> None:
        """Settle every unit: ``results`` on success, ``error`` otherwise. Never raises."""
        try:
            self._run(units)
        except KafkaStoreError as exc:
            for unit in units:
                if unit.results is None and unit.error is None:
                    unit.error = exc
        except Exception as exc:
            logger.exception("writer batch failed")
            error = Unavailable(f"writer failure: {exc!r}")
            for unit in units:
                if unit.results is None and unit.error is None:
                    unit.error = error

    def _run(self, units: Sequence[Unit]) -> None:
        conn = self._connection()
        try:
            self._transaction(conn, units)
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: psycopg.Connection) -> None:
        try:
            if not conn.closed:
                conn.rollback()
        except psycopg.Error:
            conn.close()

    def _transaction(self, conn: psycopg.Connection, units: Sequence[Unit]) -> None:
        streams = sorted({a.stream_id for u in units for a in u.appends})
        supplied = [e.id for u in units for a in u.appends if a.supplied_ids for e in a.events]
        with pg.translated():
            with conn.pipeline():
                heads_cur = conn.execute(LOCK_STREAMS, (streams,))
                xid_cur = conn.execute(CURRENT_XID)
                found_cur = None
                if supplied:
                    conn.execute(LOCK_EVENT_IDS, {"space": EVENT_ID_LOCK_SPACE, "ids": supplied})
                    found_cur = conn.execute(FIND_EVENT_IDS, {"ids": supplied})
            heads = {row[0]: (int(row[1]), bool(row[2])) for row in heads_cur.fetchall()}
            xid_row = xid_cur.fetchone()
            assert xid_row is not None
            xid = int(xid_row[0])
            found = (
                {
                    row[2]: _Found(row[0], int(row[1]), row[3], row[4])
                    for row in found_cur.fetchall()
                }
                if found_cur is not None
                else {}
            )
        self._hook("locked")

        versions = self._decide(units, heads, found)
        accepted = [u for u in units if u.accepted]
        if not accepted:
            conn.rollback()
            self._finish_repeats(units)
            return

        write_id = uuid.uuid4()
        write_str = str(write_id)
        now = format_time_now()
        timestamp_ms = int(time.time() * 1000)
        # Flat arrays in produce order; each accepted append's events are contiguous.
        # Each stream's accepted appends are made contiguous (arrival order kept within the
        # stream) so that the stream's marker row is one slice of the flat arrays.
        by_stream: dict[str, list[tuple[Unit, int, int]]] = {}
        for unit in accepted:
            for index, from_version in unit.accepted:
                by_stream.setdefault(unit.appends[index].stream_id, []).append(
                    (unit, index, from_version)
                )
        plan: list[tuple[Unit, int, int, int]] = []  # unit, append index, from_version, start
        flat_ids: list[UUID] = []
        # (key, event count) of each stream's contiguous run of messages, in produce order.
        produced = [
            (stream_id.encode(), sum(len(u.appends[i].events) for u, i, _ in entries))
            for stream_id, entries in by_stream.items()
        ]
        tracker = DeliveryTracker(sum(count for _, count in produced))
        produce = self.producer.produce
        topic = self._topic
        source = self._source
        sysid = self.sysid
        on_delivery = tracker.report
        for (key, _), entries in zip(produced, by_stream.values(), strict=True):
            for unit, index, from_version in entries:
                append = unit.appends[index]
                start = len(flat_ids)
                plan.append((unit, index, from_version, start))
                for offset_in_append, event in enumerate(append.events):
                    flat_ids.append(event.id)
                    headers = encode_headers(
                        event_id=event.id,
                        event_type=event.type,
                        stream_id=append.stream_id,
                        version=from_version + offset_in_append,
                        content_type=event.content_type,
                        source=source,
                        time=now,
                        write_id=write_str,
                        xid=xid,
                        sysid=sysid,
                        metadata=event.metadata,
                        metadata_json=event.metadata_json,
                    )
                    produce(
                        topic,
                        key,
                        event.payload,
                        headers=headers,
                        timestamp_ms=timestamp_ms,
                        on_delivery=on_delivery,
                    )
        self.producer.flush_hint()
        self._hook("produced")
        tracker.wait(self.settings.delivery_timeout + 1.0)
        tracker.resolve(produced)
        self._hook("acked")

        markers = _markers(plan, tracker)
        self._hook("before_commit")
        self._commit(
            conn,
            write_id,
            xid,
            heads=(list(versions), list(versions.values())),
            markers={
                "write_id": write_id,
                "xid": str(xid),
                "ids": flat_ids,
                "offsets": tracker.offsets,
                **markers,
            },
        )
        for unit, index, from_version, start in plan:
            append = unit.appends[index]
            result = AppendResult(
                stream_id=append.stream_id,
                from_version=from_version,
                to_version=from_version + len(append.events) - 1,
                events=tuple(
                    EventPosition(
                        id=event.id,
                        version=from_version + i,
                        partition=tracker.partitions[start + i],
                        offset=tracker.offsets[start + i],
                    )
                    for i, event in enumerate(append.events)
                ),
                created=True,
                write_id=write_id,
            )
            unit.outcomes[index] = result
        self._finish_repeats(units)

    def _decide(
        self,
        units: Sequence[Unit],
        heads: dict[str, tuple[int, bool]],
        found: dict[UUID, _Found],
    ) -> dict[str, int]:
        """Check every unit in arrival order; return the new head of each changed stream.

        One bad unit fails alone; an atomic unit fails whole. An append whose ids an earlier
        append of this batch claimed is answered as a repeat of it (a retry racing its original).
        """
        current = {stream: version for stream, (version, _) in heads.items()}
        deleted = {stream for stream, (_, gone) in heads.items() if gone}
        changed: dict[str, int] = {}
        claimed: dict[UUID, tuple[Unit, int]] = {}
        for unit in units:
            tentative: dict[str, int] = {}
            conflicts: list[WrongExpectedVersion] = []
            error: KafkaStoreError | None = None
            accepted: list[tuple[int, int]] = []
            outcomes: dict[int, AppendResult] = {}
            mirrors: dict[int, tuple[Unit, int]] = {}
            for index, append in enumerate(unit.appends):
                stream = append.stream_id
                head = tentative.get(stream, current[stream])
                if append.supplied_ids:
                    try:
                        repeat = _repeat(append, found)
                        mirror = _mirror(append, claimed)
                    except DuplicateEventId as exc:
                        error = error or exc
                        continue
                    if repeat is not None:
                        outcomes[index] = repeat
                        continue
                    if mirror is not None:
                        mirrors[index] = mirror
                        continue
                if stream in deleted:
                    error = error or StreamDeleted(stream)
                    continue
                try:
                    check_expected(stream, append.expected, head)
                except WrongExpectedVersion as exc:
                    conflicts.append(exc)
                    continue
                accepted.append((index, head + 1))
                tentative[stream] = head + len(append.events)
            if conflicts and error is None:
                error = AppendConflicts(conflicts) if unit.atomic else conflicts[0]
            if error is not None:
                unit.error = error
                continue
            unit.accepted = accepted
            unit.outcomes = outcomes
            unit.mirrors = mirrors
            for index, _ in accepted:
                for event in unit.appends[index].events:
                    claimed[event.id] = (unit, index)
            current.update(tentative)
            changed.update(tentative)
        return changed

    def _finish_repeats(self, units: Sequence[Unit]) -> None:
        for unit in units:
            if unit.error is not None or unit.results is not None:
                continue
            for index, (other, other_index) in unit.mirrors.items():
                original = other.outcomes[other_index]
                unit.outcomes[index] = AppendResult(
                    stream_id=original.stream_id,
                    from_version=original.from_version,
                    to_version=original.to_version,
                    events=original.events,
                    created=False,
                    write_id=original.write_id,
                )
            unit.results = [unit.outcomes[i] for i in range(len(unit.appends))]

    def _commit(
        self,
        conn: psycopg.Connection,
        write_id: UUID,
        xid: int,
        *,
        heads: tuple[list[str], list[int]],
        markers: dict[str, Any],
    ) -> None:
        """Heads, marker and COMMIT in one pipelined round trip."""
        try:
            with conn.pipeline():
                conn.execute(UPDATE_HEADS, heads)
                conn.execute(INSERT_MARKERS, markers)
                self._hook("commit")
                conn.commit()
        except (psycopg.Error, KafkaStoreError) as exc:
            if isinstance(exc, psycopg.errors.IntegrityError | psycopg.errors.DataError):
                raise  # the server refused the statements: nothing was committed
            # The reply to COMMIT was lost (or the server failed it). Settle the outcome
            # through the marker on a fresh connection (DESIGN.md section 2, step 5).
            logger.warning("COMMIT of write %s failed (%s); resolving its outcome", write_id, exc)
            conn.close()
            if resolve_commit(self.settings, write_id, xid):
                logger.info("write %s had committed", write_id)
                return
            raise Unavailable(f"the transaction was aborted at COMMIT: {exc}") from exc


def _repeat(append: PreparedAppend, found: dict[UUID, _Found]) -> AppendResult | None:
    """The original result when this append's ids are all committed, as this exact append.

    Raises DuplicateEventId when some ids are stored and some are not, or stored elsewhere.
    """
    hits = [found.get(e.id) for e in append.events]
    present = [str(e.id) for e, hit in zip(append.events, hits, strict=True) if hit is not None]
    if not present:
        return None
    first = hits[0]
    if (
        len(present) == len(append.events)
        and first is not None
        and all(
            hit is not None
            and hit.stream_id == append.stream_id
            and hit.version == first.version + i
            for i, hit in enumerate(hits)
        )
    ):
        return AppendResult(
            stream_id=append.stream_id,
            from_version=first.version,
            to_version=first.version + len(hits) - 1,
            events=tuple(
                EventPosition(
                    id=event.id,
                    version=hit.version,
                    partition=hit.partition if hit.partition is not None else -1,
                    offset=hit.offset if hit.offset is not None else -1,
                )
                for event, hit in zip(append.events, hits, strict=True)
                if hit is not None
            ),
            created=False,
        )
    raise DuplicateEventId(present)


def _markers(
    plan: Sequence[tuple[Unit, int, int, int]], tracker: DeliveryTracker
) -> dict[str, list[Any]]:
    """One marker row per stream: the stream's accepted appends are contiguous in ``plan``."""
    rows: dict[str, list[Any]] = {}  # stream -> [from, to, lo (1-based), hi, partition]
    for unit, index, from_version, start in plan:
        append = unit.appends[index]
        n = len(append.events)
        row = rows.get(append.stream_id)
        if row is None:
            rows[append.stream_id] = [
                from_version,
                from_version + n - 1,
                start + 1,
                start + n,
                tracker.partitions[start],
            ]
        else:
            row[1] += n
            row[3] += n
    return {
        "streams": list(rows),
        "froms": [r[0] for r in rows.values()],
        "tos": [r[1] for r in rows.values()],
        "los": [r[2] for r in rows.values()],
        "his": [r[3] for r in rows.values()],
        "partitions": [r[4] for r in rows.values()],
    }


def _mirror(
    append: PreparedAppend, claimed: dict[UUID, tuple[Unit, int]]
) -> tuple[Unit, int] | None:
    """The earlier append of this batch that this one repeats exactly, if any."""
    owners = [claimed.get(e.id) for e in append.events]
    present = [str(e.id) for e, o in zip(append.events, owners, strict=True) if o is not None]
    if not present:
        return None
    first = owners[0]
    if first is not None and all(
        o is not None and o[0] is first[0] and o[1] == first[1] for o in owners
    ):
        unit, index = first
        original = unit.appends[index]
        if original.stream_id == append.stream_id and [e.id for e in original.events] == [
            e.id for e in append.events
        ]:
            return first
    raise DuplicateEventId(present)


def format_time_now() -> str:
    from datetime import UTC, datetime

    return format_time(datetime.now(UTC))


def resolve_commit(settings: Settings, write_id: UUID, xid: int) -> bool:
    """Whether a write whose COMMIT reply was lost committed; OutcomeUnknown if unknowable."""
    deadline = time.monotonic() + settings.commit_resolve_timeout
    delay = 0.05
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with pg.connect(settings.database_url, autocommit=True) as conn, pg.translated():
                row = conn.execute(MARKER_EXISTS, (write_id,)).fetchone()
                if row and row[0]:
                    return True
                status_row = conn.execute(XID_STATUS, ([str(xid)],)).fetchone()
                status = status_row[1] if status_row else "future"
                if status not in ("in progress", "future"):
                    # The writer's transaction is over: a new statement (new snapshot) settles it.
                    row = conn.execute(MARKER_EXISTS, (write_id,)).fetchone()
                    return bool(row and row[0])
        except KafkaStoreError as exc:
            last = exc
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise OutcomeUnknown(
        f"the outcome of write {write_id} is unknown ({last or 'still in progress'}); "
        "retry with the same event ids: the retry is answered idempotently"
    )
