"""The verdict rule (docs/design.md section 2): is an event read from Kafka real or a phantom?

An event is *real* iff the commit marker of its ``ce_pgwrite`` is visible and lists that event
id at that stream and version. Everything else is a *phantom* and is never shown to anyone.

A real event is real at one place only: the partition and offset its marker records (the
delivery report the writer waited for). The idempotent producer does not rule out a second copy
of a batch: when a produce request's reply is lost, librdkafka may resend the batch under a
bumped epoch, which the broker cannot recognise as a retry, so the log holds the same events
(same write id, ids, versions) twice. Only the copy at the marker's offset is real; the other
is a phantom (``copy``), or the indexer and every subscription would deliver the events twice.
A marker without offsets (none recorded) leaves the place unchecked.

Resolution, for a batch of events:

1. One query for the markers of every write id of the batch (the fast path: a committed write
   settles all its events at once).
1b. When the caller may wait (:meth:`VerdictResolver.judge_until_settled`): wait for the writers
   of the write ids without a marker on their own locks (a writer holds an advisory lock on its
   xid from its first statement to COMMIT or ROLLBACK) and read their markers again, in one
   round trip. A consumer usually meets an event while its writer still waits for the other
   acks, so this is the common path at low rates: two round trips, no polling.
2. For the write ids still without a marker, ask in its own statement whether the writer may still
   run: ``pg_xact_status(xid)``, guarded against "future" xids. ``in progress`` means the
   writer holds its transaction open (it is waiting for its acks) -> *pending*: the caller waits
   and must not move past the event.
3. Otherwise (committed, aborted, or too old to know) look for the marker again **in a new
   statement** - a new READ COMMITTED snapshot that sees a commit which raced with step 1.
   Still missing -> phantom.

Why not the xid alone: PostgreSQL reissues an xid whose WAL never reached disk before a crash (or
was lost in a failover), so a reused xid can read ``committed`` for a write that aborted; and
``pg_xact_status`` forgets old xids (NULL) and errors on future ones. The marker is the verdict;
the xid status only says whether waiting could change it.

A ``ce_pgsysid`` of another cluster is a phantom and an alarm: its xid and write id mean nothing
here. Settled verdicts never change (a marker is written in the writer's transaction and never
deleted while Kafka keeps events; an xid that is no longer running cannot commit later), so
they are cached.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from kafkastore import pg
from kafkastore.codec import WireEvent
from kafkastore.retry import Backoff

logger = logging.getLogger("kafkastore.verdict")


class Verdict(enum.Enum):
    """What the rule says of one event."""

    REAL = "real"
    PHANTOM = "phantom"
    PENDING = "pending"
    """The writer may still commit: wait, and do not move past this event."""


class PhantomReason(enum.Enum):
    """Why an event is a phantom."""

    NO_MARKER = "no_marker"
    NOT_IN_MARKER = "not_in_marker"
    FOREIGN_CLUSTER = "foreign_cluster"
    MALFORMED = "malformed"
    COPY = "copy"
    """Another copy of a real event (a resent batch): not at the offset its marker records."""


# Step 1 and 3. The ordinality of event_ids gives each id's version (and offset) within the write.
MARKERS = """
SELECT a.write_id, a.stream_id, a.from_version, a.event_ids, a.partition, a.offsets
FROM appends a
WHERE a.write_id = ANY(%s::uuid[])
"""

# Binary rows: the arrays cost less to send and to load (measured: -25% of CPU on both sides).
# Not prepared: a plan kept from when ``appends`` was small (a new store's first seconds, before
# autovacuum's first ANALYZE) would scan the table on every batch; planning it afresh is cheap.
MARKERS_OPTIONS = {"binary": True, "prepare": False}

# Step 2, in its own statement. pg_xact_status() errors on an xid this server never handed out,
# so only xids below the snapshot's xmax are given to it. The xmax of a snapshot is the latest
# *completed* xid + 1, not the next xid: a writer still running can hold an xid at or above it.
# For those, the writer's lock on its own xid (held from assignment to the end) says whether it
# runs. No lock means it is over - or never existed here (an xid lost in a crash or failover):
# either way it is settled, and step 3 (a new statement) sees its marker if it has one. On a
# standby an unknown xid may be a write not replayed yet ('future'): wait.
XID_STATUS = """
SELECT x::text,
       CASE WHEN x < pg_snapshot_xmax(pg_current_snapshot())
                THEN coalesce(pg_xact_status(x), 'forgotten')
            WHEN EXISTS (SELECT 1 FROM pg_locks l
                         WHERE l.locktype = 'transactionid'
                           AND l.transactionid = (x::text::bigint %% 4294967296)::text::xid)
                THEN 'in progress'
            WHEN pg_is_in_recovery() THEN 'future'
            ELSE 'not running'
       END
FROM unnest(%s::xid8[]) AS x
"""

WRITER_MAY_RUN = frozenset({"in progress", "future"})
"""The answers of XID_STATUS that mean the writer may still commit: wait, then ask again."""

WRITER_LOCK_SPACE = 0x6B617877  # "kaxw"
"""The classid of the advisory lock a writer holds on its own xid for the whole transaction
(writer.sql.CURRENT_XID): waiting for it to be free is waiting for that writer's COMMIT or
ROLLBACK, without polling."""


WAIT_KEYS_MAX = 256
"""At most this many writer locks are waited for in one look (each takes a slot of the shared
lock table until the wait's COMMIT); more writes without a marker are mostly phantoms of old
offsets, which step 2 settles without waiting."""


def writer_lock_key(xid: int) -> int:
    """The objid of writer ``xid``'s lock: its low 31 bits (two running xids never share them:
    PostgreSQL keeps every live xid within 2**31 of the newest)."""
    return xid & 0x7FFFFFFF


def running_xids(conn: psycopg.Connection, xids: Iterable[int]) -> set[int]:
    """Those of ``xids`` whose writer may still commit (step 2, a statement of its own)."""
    with pg.translated():
        rows = pg.execute(conn, XID_STATUS, ([str(x) for x in xids],)).fetchall()
    return {int(x) for x, status in rows if status in WRITER_MAY_RUN}


@dataclass(frozen=True, slots=True)
class _Write:
    """What a committed write stored: (stream_id, version) -> event id, and where the writer's
    delivery report put it, (partition, offset), when the marker recorded it."""

    events: dict[tuple[str, int], UUID]
    places: dict[tuple[str, int], tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one event, and for a phantom the reason."""

    verdict: Verdict
    reason: PhantomReason | None = None


REAL = Judgement(Verdict.REAL)
PENDING = Judgement(Verdict.PENDING)
_PENDING = Verdict.PENDING  # bound once (see consumers.judge)


class VerdictResolver:
    """Judges batches of decoded events; shared by the indexer and the consumer runtime.

    ``sysid`` is this cluster's system identifier. The resolver keeps a bounded cache of settled
    writes: at most ``cache_size`` writes and ``cache_events`` of their events (~300 bytes of
    memory each; a group-committed write holds up to thousands, so a bound on writes alone let
    the cache hold millions). It is not thread-safe (one per consumer loop). The connection must
    be at READ COMMITTED (the default): step 3 relies on each statement taking a new snapshot.
    """

    def __init__(
        self, sysid: str, *, cache_size: int = 100_000, cache_events: int = 100_000
    ) -> None:
        self.sysid = sysid
        self._cache_size = cache_size
        self._cache_events = cache_events
        self._committed: OrderedDict[UUID, _Write] = OrderedDict()
        self.cached_events = 0
        """Events of the writes in the cache (at most ``cache_events`` between calls)."""
        self._phantom_writes: OrderedDict[UUID, None] = OrderedDict()
        self.queries = 0

    def judge(
        self, conn: psycopg.Connection, events: Sequence[WireEvent], *, wait: float = 0.0
    ) -> list[Judgement]:
        """One judgement per event, in order. Runs at most four statements.

        ``wait`` > 0: the writers of events without a marker are waited for (step 1b) at most
        ``wait`` seconds. The writes this batch needs are gathered in a map of its own before
        anything is added to the cache: loading new markers may evict old ones from the
        (bounded) cache, and a write evicted mid-call must not turn its events into phantoms.
        """
        writes: dict[UUID, _Write] = {}
        unknown: set[UUID] = set()
        last: UUID | None = None
        for e in events:
            w = e.write_id
            if w is last:
                continue  # the events of one write come in a run (one decoded UUID object)
            last = w
            if e.sysid != self.sysid or w in writes or w in unknown:
                continue
            cached = self._committed.get(w)
            if cached is not None:
                self._committed.move_to_end(w)
                writes[w] = cached
            elif w not in self._phantom_writes:
                unknown.add(w)
        pending: set[UUID] = set()
        if unknown:
            missing = self._load_markers(conn, unknown, writes)
            if missing and wait > 0:
                missing = self._wait_for_writers(conn, missing, events, writes, wait)
            if missing:
                xids = {e.write_id: e.xid for e in events if e.write_id in missing}
                running = self._running_xids(conn, set(xids.values()))
                settled = {w for w, x in xids.items() if x not in running}
                pending = missing - settled
                if settled:
                    still_missing = self._load_markers(conn, settled, writes)
                    for write_id in still_missing:
                        self._remember_phantom(write_id)
        judgements = [self._judge_one(e, writes, pending) for e in events]
        self._remember(writes)
        return judgements

    def judge_until_settled(
        self,
        conn: psycopg.Connection,
        events: Sequence[WireEvent],
        *,
        timeout: float,
        poll: float = 0.005,
        max_poll: float = 0.2,
    ) -> list[Judgement]:
        """Like :meth:`judge`, waiting (bounded) while writers are still running.

        The first look waits on the writers' own locks (step 1b); a writer that holds none (an
        older version) or outlives that wait leaves only polling. Judgements still PENDING at
        the deadline are returned as such: the caller must stop before the first of them and
        try again later.
        """
        deadline = time.monotonic() + timeout
        judgements = self.judge(conn, events, wait=timeout)
        delays = Backoff(initial=poll, maximum=max_poll).delays()
        while any(j.verdict is _PENDING for j in judgements):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(next(delays), remaining))
            judgements = self.judge(conn, events)
        return judgements

    def _judge_one(
        self, event: WireEvent, writes: dict[UUID, _Write], pending: set[UUID]
    ) -> Judgement:
        if event.sysid != self.sysid:
            logger.error(
                "event %s at %s/%s names cluster %r, not ours (%r): phantom",
                event.event_id,
                event.partition,
                event.offset,
                event.sysid,
                self.sysid,
            )
            return Judgement(Verdict.PHANTOM, PhantomReason.FOREIGN_CLUSTER)
        write = writes.get(event.write_id)
        if write is not None:
            key = (event.stream_id, event.version)
            if write.events.get(key) == event.event_id:
                place = write.places.get(key)
                if place is not None and place != (event.partition, event.offset):
                    return Judgement(Verdict.PHANTOM, PhantomReason.COPY)
                return REAL
            # A committed write that does not list this event: a forged or copied header.
            return Judgement(Verdict.PHANTOM, PhantomReason.NOT_IN_MARKER)
        if event.write_id in pending:
            return PENDING
        return Judgement(Verdict.PHANTOM, PhantomReason.NO_MARKER)

    def _load_markers(
        self, conn: psycopg.Connection, write_ids: Iterable[UUID], writes: dict[UUID, _Write]
    ) -> set[UUID]:
        """Put the markers found in ``writes``; return the write ids that have none."""
        wanted = set(write_ids)
        self.queries += 1
        with pg.translated():
            rows = pg.execute(conn, MARKERS, (list(wanted),), **MARKERS_OPTIONS).fetchall()
        return wanted - self._add_markers(rows, writes)

    def _wait_for_writers(
        self,
        conn: psycopg.Connection,
        missing: set[UUID],
        events: Sequence[WireEvent],
        writes: dict[UUID, _Write],
        wait: float,
    ) -> set[UUID]:
        """Step 1b: wait for the writers of ``missing`` on their locks, then load their markers
        (one round trip); return the write ids still without one (all of them when a writer
        outlived ``wait``)."""
        keys = sorted({writer_lock_key(e.xid) for e in events if e.write_id in missing})
        if len(keys) > WAIT_KEYS_MAX:
            return missing  # mostly phantoms (a re-read of old offsets): step 2 settles them
        self.queries += 1
        rows = pg.after_advisory_locks(
            conn, WRITER_LOCK_SPACE, keys, wait, then=(MARKERS, (list(missing),)), **MARKERS_OPTIONS
        )
        if rows is None:
            return missing
        return missing - self._add_markers(rows, writes)

    @staticmethod
    def _add_markers(rows: Iterable[Sequence[Any]], writes: dict[UUID, _Write]) -> set[UUID]:
        """Put the writes of MARKERS rows in ``writes``; return their write ids."""
        found: dict[UUID, _Write] = {}
        for write_id, stream_id, from_version, event_ids, partition, offsets in rows:
            write = found.setdefault(write_id, _Write({}, {}))
            for i, event_id in enumerate(event_ids):
                key = (stream_id, from_version + i)
                write.events[key] = event_id
                offset = offsets[i] if offsets is not None and i < len(offsets) else None
                if partition is not None and offset is not None:
                    write.places[key] = (partition, offset)
        writes.update(found)
        return set(found)

    def _remember(self, writes: dict[UUID, _Write]) -> None:
        """Cache committed writes (settled for good), least recently used evicted first."""
        for write_id, write in writes.items():
            old = self._committed.pop(write_id, None)
            self._committed[write_id] = write  # (re)inserted last: the most recently used
            self.cached_events += len(write.events) - (len(old.events) if old else 0)
        while len(self._committed) > self._cache_size or self.cached_events > self._cache_events:
            self.cached_events -= len(self._committed.popitem(last=False)[1].events)

    def _running_xids(self, conn: psycopg.Connection, xids: set[int]) -> set[int]:
        self.queries += 1
        return running_xids(conn, xids)

    def _remember_phantom(self, write_id: UUID) -> None:
        self._phantom_writes[write_id] = None
        if len(self._phantom_writes) > self._cache_size:
            self._phantom_writes.popitem(last=False)
