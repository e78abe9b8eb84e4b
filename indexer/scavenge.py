"""The scavenger: physically removes hidden events from the index (docs/http.md "Stream lifecycle").

Reads hide events at once (the rule ``kafkastore_visible`` of migration 0004, in SQL); the
scavenger then deletes those ``events`` rows, and nothing else, in small transactions of at
most ``batch`` rows, so it never holds locks that appends or reads wait on for long:

- it takes no lock on ``streams`` (appends, deletes and metadata writes lock those rows) and
  only row locks on the ``events`` rows it deletes (``SKIP LOCKED``: two scavengers, the
  indexer's background one and ``kafkastore scavenge``, share the work instead of queueing);
- readers keep their MVCC snapshot: a page being read while its rows are deleted is whole.

What it removed is remembered per stream in ``scavenged`` (every version below
``below_version`` is gone for good, ``removed`` counts the rows and their global positions),
in the same transaction: the indexer skips those versions when it re-reads old offsets, so a
scavenged event never comes back, also not when the metadata is loosened afterwards; and the
audit knows the positions are not missing but removed. Kafka keeps its copy of every event
until the topic's own retention (forever by default): the topic stays append-only.

Rows are taken per stream in version order, so what remains of a stream stays contiguous.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kafkastore import pg
from kafkastore.config import Settings

logger = logging.getLogger("kafkastore.indexer")

# The streams whose events may be hidden (the partial index streams_lifecycle) and, per
# stream, its hidden rows in version order, up to a bound that keeps the scan short: a hidden
# event is below truncate_before or below head - max_count + 1, unless the stream is
# tombstoned or has a max_age (then every version may be).
_CANDIDATES = """
FROM streams s
CROSS JOIN LATERAL (
    SELECT e.global_position FROM events e
    WHERE e.stream_id = s.stream_id
      AND e.version < CASE WHEN s.deleted OR s.max_age IS NOT NULL THEN 9223372036854775807
                      ELSE greatest(coalesce(s.truncate_before, 1),
                                    s.version - coalesce(s.max_count, s.version) + 1) END
      AND NOT kafkastore_visible(e.version, e.created_at, s.version, s.truncate_before,
                                 s.max_count, s.max_age, s.deleted)
    ORDER BY e.version
    LIMIT %(batch)s
    FOR UPDATE OF e SKIP LOCKED
) AS e
WHERE s.deleted OR s.truncate_before IS NOT NULL OR s.max_count IS NOT NULL
   OR s.max_age IS NOT NULL
"""

SCAVENGE_BATCH = f"""
WITH doomed AS (SELECT e.global_position {_CANDIDATES} LIMIT %(batch)s),
gone AS (
    DELETE FROM events e USING doomed d WHERE e.global_position = d.global_position
    RETURNING e.stream_id, e.version
),
per_stream AS (
    SELECT stream_id, max(version) + 1 AS below, count(*) AS n
    FROM gone GROUP BY stream_id ORDER BY stream_id
),
remembered AS (
    INSERT INTO scavenged AS g (stream_id, below_version, removed)
    SELECT stream_id, below, n FROM per_stream
    ON CONFLICT (stream_id) DO UPDATE
    SET below_version = greatest(g.below_version, excluded.below_version),
        removed = g.removed + excluded.removed, updated_at = now()
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM remembered)
"""

# How many rows a pass would remove now (for the progress bar; the pass may find more).
HIDDEN_ROWS = f"SELECT count(*) FROM (SELECT e.global_position {_CANDIDATES}) AS c"


@dataclass(frozen=True, slots=True)
class Scavenged:
    """What one pass removed."""

    rows: int
    """``events`` rows deleted."""
    streams: int
    """Stream entries of ``scavenged`` written (one per stream per batch)."""
    batches: int
    seconds: float

    @property
    def rate(self) -> float:
        """Rows removed per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def scavenge_batch(conn: psycopg.Connection, batch: int) -> tuple[int, int]:
    """Remove at most ``batch`` hidden rows in one transaction; (rows, stream entries)."""
    with pg.translated(), conn.transaction():
        row = conn.execute(SCAVENGE_BATCH, {"batch": batch}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def hidden_rows(conn: psycopg.Connection, *, batch: int = 1_000_000) -> int:
    """How many ``events`` rows are hidden now (an estimate bounded per stream by ``batch``)."""
    with pg.translated():
        row = conn.execute(HIDDEN_ROWS, {"batch": batch}).fetchone()
    return int(row[0]) if row else 0


def scavenge(
    settings: Settings,
    *,
    batch: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Scavenged:
    """One pass: batches until one removes nothing (or ``should_stop()`` says so); calls
    ``on_batch(rows)`` after each batch."""
    size = batch or settings.scavenge_batch
    started = time.perf_counter()
    rows = streams = batches = 0
    with pg.connect(settings.database_url, application_name="kafkastore-scavenger") as conn:
        while not (should_stop is not None and should_stop()):
            removed, touched = scavenge_batch(conn, size)
            batches += 1
            rows += removed
            streams += touched
            if on_batch is not None:
                on_batch(removed)
            if removed == 0:
                break
    return Scavenged(rows, streams, batches, time.perf_counter() - started)


def run(settings: Settings, *, batch: int, out: TextIO) -> int:
    """``kafkastore scavenge``: one pass now, with a progress bar and a summary."""
    console = Console(stderr=True)
    with pg.connect(settings.database_url, autocommit=True) as conn:
        total = hidden_rows(conn)
    with Progress(
        TextColumn("scavenging"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("scavenge", total=total)

        def advance(removed: int) -> None:
            progress.advance(task, removed)

        done = scavenge(settings, batch=batch, on_batch=advance)
    print(
        f"scavenged {done.rows} hidden events ({done.streams} stream entries, {done.batches} "
        f"batches) in {done.seconds:.2f}s: {done.rate:.0f} rows/s; Kafka keeps its copies",
        file=out,
    )
    return 0
