"""The append protocol of docs/design.md section 2: one PostgreSQL transaction per batch.

    1. BEGIN; write_id := new UUID; xid := pg_current_xact_id().
    2. Create missing stream rows and lock every target row, in stream-id order (one upsert
       ordered by stream id: concurrent batches take row locks in the same order, so they never
       deadlock; two writers creating one new stream serialise on the insert).
    3. Check expected versions (docs/http.md's four modes) and event-id idempotency (section 5);
       assign versions. A pure function: writer.decide.
    4. Produce every accepted event with ce_pgwrite/ce_pgxid/ce_pgsysid; await EVERY report
       (writer.produce).
    5. Update the heads, insert the commit marker (``appends`` rows, offsets included), COMMIT.
       Any failed or missing report -> ROLLBACK -> Unavailable (retriable). A lost COMMIT reply
       is settled through the marker on a fresh connection, else OutcomeUnknown.

Deletes (soft and hard, docs/http.md "Stream lifecycle") are units of the same batches: their
streams are locked in step 2 with the appends', decided in arrival order in step 3, and their
head rows written in step 5 after the new heads. A delete produces nothing to Kafka (the topic
stays append-only; what is hidden is decided at read time from the head row), so a batch of
deletions only skips step 4 and commits at once.

The heads and the marker are written after the acks and before COMMIT, in one pipelined round
trip with it: nothing of the transaction is visible before COMMIT, so when they are written
inside it does not change what readers can see; the row locks of step 2 are what serialise
writers. Why the whole thing is correct:

- A writer that dies anywhere before COMMIT leaves an aborted transaction: heads unchanged, no
  marker; its produced events are phantoms to the verdict rule (kafkastore.verdict).
- A send that times out but lands later lands without a marker: a phantom.
- Per-stream Kafka order equals version order: the next append to a stream gets the head's row
  lock only after the previous append committed, which was after all its acks.
- A lost COMMIT reply is settled by the marker, which exists iff the transaction committed; it
  is looked for again in a new statement once the xid no longer runs (the verdict rule's own
  test), so a commit racing the first look is not missed.
- The ladder lock_timeout < message.timeout.ms < idle_in_transaction_session_timeout makes a
  stuck writer abort rather than hold heads forever.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from uuid import UUID

import psycopg

from kafkastore import pg
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError, OutcomeUnknown, Unavailable
from kafkastore.retry import Backoff
from kafkastore.streams import category_of
from kafkastore.verdict import WRITER_LOCK_SPACE, running_xids
from writer import faults, sql
from writer.decide import (
    Decision,
    Delivered,
    Head,
    Settled,
    StoredEvent,
    Unit,
    decide,
    fail,
    settle,
)
from writer.delivery import SharedProducer
from writer.produce import Stamp, produce_and_await

logger = logging.getLogger("kafkastore.writer")

APPLICATION_NAME = "kafkastore-writer"

_RESOLVE_BACKOFF = Backoff(initial=0.05, maximum=1.0)


class BatchRunner:
    """Runs batches of units through the protocol on one connection (one worker thread)."""

    def __init__(self, settings: Settings, producer: SharedProducer, sysid: str) -> None:
        self.settings = settings
        self.producer = producer
        self.sysid = sysid
        self.conn: psycopg.Connection | None = None

    def run(self, units: Sequence[Unit]) -> list[Settled]:
        """The transaction script: one answer per unit, in order. Never raises."""
        decision: Decision | None = None
        try:
            conn = self._connection()
            try:
                xid, heads, stored = self._lock(conn, units)  # steps 1-2
                faults.step("locked")
                decision = decide(units, heads, stored)  # step 3
                if not decision.accepted:
                    if decision.deletions:  # deletions only: nothing to produce
                        self._commit_deletions(conn, decision)
                        return settle(decision, None)
                    with pg.translated():
                        conn.rollback()
                    return settle(decision, None)
                write_id = uuid.uuid4()
                delivered = produce_and_await(  # step 4
                    self.producer,
                    decision,
                    Stamp(
                        topic=self.settings.topic,
                        source=self.settings.source,
                        sysid=self.sysid,
                        write_id=write_id,
                        xid=xid,
                    ),
                    timeout=self.settings.delivery_timeout + 1.0,
                )
                faults.step("acked")
                self._commit(conn, decision, delivered, xid)  # step 5
                return settle(decision, delivered)
            except BaseException:
                pg.discard(conn)
                raise
        except KafkaStoreError as exc:
            return fail(decision, len(units), exc)
        except Exception as exc:
            logger.exception("writer batch failed")
            return fail(decision, len(units), Unavailable(f"writer failure: {exc!r}"))

    def _lock(
        self, conn: psycopg.Connection, units: Sequence[Unit]
    ) -> tuple[int, dict[str, Head], dict[UUID, StoredEvent]]:
        """Steps 1-2 in one pipelined round trip: lock the heads (and supplied ids), read them."""
        streams = sorted(
            {a.stream_id for u in units for a in u.appends}
            | {u.deletion.stream_id for u in units if u.deletion is not None}
        )
        supplied = [e.id for u in units for a in u.appends if a.supplied_ids for e in a.events]
        with pg.translated():
            with conn.pipeline():
                heads = pg.execute(
                    conn, sql.LOCK_STREAMS, (streams, [category_of(s) for s in streams])
                )
                xid = pg.execute(conn, sql.CURRENT_XID, (WRITER_LOCK_SPACE,))
                found = None
                if supplied:
                    ids = {"space": sql.EVENT_ID_LOCK_SPACE, "ids": supplied}
                    pg.execute(conn, sql.LOCK_EVENT_IDS, ids)
                    found = pg.execute(conn, sql.FIND_EVENT_IDS, ids)
            xid_row = xid.fetchone()
            assert xid_row is not None
            return (
                int(xid_row[0]),
                {s: Head(int(v), bool(d), bool(sd)) for s, v, d, sd in heads.fetchall()},
                {row[0]: StoredEvent(*row[1:]) for row in (found.fetchall() if found else [])},
            )

    def _commit(
        self, conn: psycopg.Connection, decision: Decision, delivered: Delivered, xid: int
    ) -> None:
        """Step 5: heads, marker and COMMIT in one pipelined round trip; a lost reply settled."""
        rows = decision.markers
        faults.step("before_commit")
        try:
            with pg.commit_translated(), conn.pipeline():
                pg.execute(
                    conn,
                    sql.COMMIT_WRITE,
                    {
                        "heads": list(decision.heads),
                        "versions": list(decision.heads.values()),
                        "write_id": delivered.write_id,
                        "xid": str(xid),
                        "ids": [e.id for a in decision.produce_order for e in a.append.events],
                        "digests": [
                            e.digest for a in decision.produce_order for e in a.append.events
                        ],
                        "offsets": delivered.offsets,
                        "streams": [r.stream_id for r in rows],
                        "froms": [r.from_version for r in rows],
                        "tos": [r.to_version for r in rows],
                        "los": [r.start + 1 for r in rows],
                        "his": [r.start + r.count for r in rows],
                        "partitions": [delivered.partitions[r.start] for r in rows],
                    },
                )
                _apply_deletions(conn, decision)
                faults.step("commit")
                conn.commit()
        except KafkaStoreError as exc:
            # The reply to COMMIT was lost (or the server failed it): settle the outcome through
            # the marker on a fresh connection. (A refused statement is not caught here: it
            # proves nothing committed.)
            logger.warning("COMMIT of write %s failed (%s); resolving it", delivered.write_id, exc)
            conn.close()
            if resolve_commit(self.settings, delivered.write_id, xid):
                logger.info("write %s had committed", delivered.write_id)
                return
            raise Unavailable(f"the transaction was aborted at COMMIT: {exc}") from exc

    def _commit_deletions(self, conn: psycopg.Connection, decision: Decision) -> None:
        """A batch of deletions only: the head rows and COMMIT in one round trip. There is no
        marker to settle a lost COMMIT reply by; a delete is idempotent, so the caller may
        simply delete again."""
        try:
            with pg.commit_translated(), conn.pipeline():
                _apply_deletions(conn, decision)
                conn.commit()
        except KafkaStoreError as exc:
            conn.close()
            raise OutcomeUnknown(
                f"the outcome of the delete is unknown ({exc.message}); deleting again is safe"
            ) from exc

    def _connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = pg.connect(self.settings.writer_url, application_name=APPLICATION_NAME)
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
        """Close the connection (a later batch opens a new one)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _apply_deletions(conn: psycopg.Connection, decision: Decision) -> None:
    """The deleted streams' final states (after COMMIT_WRITE's heads: a delete that follows an
    append in the batch wins) and the snapshots of tombstoned ones removed."""
    rows = list(decision.deletions.values())
    if not rows:
        return
    conn.execute(
        sql.APPLY_DELETIONS,
        (
            [r.stream_id for r in rows],
            [r.truncate_before for r in rows],
            [r.soft_deleted for r in rows],
            [r.hard for r in rows],
        ),
    )
    hard = [r.stream_id for r in rows if r.hard]
    if hard:
        conn.execute(sql.DELETE_SNAPSHOTS, (hard,))


def resolve_commit(settings: Settings, write_id: UUID, xid: int) -> bool:
    """Whether a write whose COMMIT reply was lost committed; OutcomeUnknown if unknowable.

    The marker settles it; while the xid may still run (the verdict rule's test) the answer
    could change, so it is asked again, bounded by ``commit_resolve_timeout``.
    """
    last: Exception | None = None
    for _ in _RESOLVE_BACKOFF.attempts(timeout=settings.commit_resolve_timeout):
        try:
            with pg.connect(settings.writer_url, autocommit=True) as conn, pg.translated():
                if _marker_exists(conn, write_id):
                    return True
                if xid not in running_xids(conn, [xid]):
                    # The writer's transaction is over: a new statement (new snapshot) settles it.
                    return _marker_exists(conn, write_id)
        except KafkaStoreError as exc:
            last = exc
    raise OutcomeUnknown(
        f"the outcome of write {write_id} is unknown ({last or 'still in progress'}); "
        "retry with the same event ids: the retry is answered idempotently"
    )


def _marker_exists(conn: psycopg.Connection, write_id: UUID) -> bool:
    row = conn.execute(sql.MARKER_EXISTS, (write_id,)).fetchone()
    return bool(row and row[0])
