"""The indexer over real Kafka and PostgreSQL: exactly the real events, once, in order."""

from __future__ import annotations

import psycopg

from kafkastore.config import Settings
from tests.indexer.helpers import indexed, running_indexer, wait_for_count
from tests.support import unique
from tests.support.wire import ManualWriter


def test_real_events_are_indexed_and_phantoms_are_not(settings: Settings) -> None:
    real, aborted, no_marker = unique("Real"), unique("Aborted"), unique("Nomarker")
    with ManualWriter(settings) as w:
        committed = w.append(real, [("A", {"n": 1}), ("B", {"n": 2})])
        ghost1 = w.phantom_aborted(aborted, [("A", {})])
        ghost2 = w.phantom_committed_xid(no_marker, [("A", {})])
        last = w.append(real, [("C", {"n": 3})])
    with running_indexer(settings) as ix:
        assert wait_for_count(settings.database_url, [real], 3, indexer=ix) == 3
    got = indexed(settings.database_url, [real, aborted, no_marker])
    assert got == [(real, p.version, str(p.event_id)) for p in [*committed, *last]]
    with psycopg.connect(settings.database_url) as conn:
        recorded = conn.execute(
            'SELECT partition, "offset", reason FROM phantoms WHERE topic = %s', (settings.topic,)
        ).fetchall()
    assert sorted(recorded) == sorted(
        (g.partition, g.offset, "no_marker") for g in [*ghost1, *ghost2]
    )
