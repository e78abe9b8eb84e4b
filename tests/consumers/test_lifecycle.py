"""Subscriptions and the stream lifecycle: hidden events are skipped (the documented
behaviour of consumers.subscription), at-least-once and exactly-once, and a projection
rebuilt from offset 0 after a deletion holds what reads show."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from consumers import PostgresProjection, Subscription
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent, RecordedEvent
from tests.consumers.test_subscription import eventually
from tests.support.names import unique


def lifecycle_history(store: EventStore, category: str) -> dict[str, str]:
    """Streams of ``category`` in every lifecycle state; the readable events are
    kept-1..2, recreated-4..5, truncated-3, capped-4..5 and a last event of kept."""
    names = {n: f"{category}-{n}" for n in ("kept", "soft", "recreated", "hard", "trunc", "cap")}

    def put(name: str, count: int) -> None:
        store.append(names[name], [NewEvent(type="E", data={"n": name}) for _ in range(count)])

    for name in names:
        put(name, 3)
    store.delete_stream(names["soft"])
    store.delete_stream(names["recreated"])
    put("recreated", 2)
    store.delete_stream(names["hard"], hard=True)
    store.set_metadata(names["trunc"], truncate_before=3)
    put("cap", 2)
    store.set_metadata(names["cap"], max_count=2)
    store.append(names["kept"], [NewEvent(type="Last")])
    return names


def readable(names: dict[str, str]) -> set[tuple[str, int]]:
    return {
        *((names["kept"], v) for v in (1, 2, 3, 4)),
        *((names["recreated"], v) for v in (4, 5)),
        (names["trunc"], 3),
        *((names["cap"], v) for v in (4, 5)),
    }


def test_an_at_least_once_subscription_skips_hidden_events(settings: Settings) -> None:
    category = unique("Life").replace("-", "")
    with EventStore(settings) as store:
        names = lifecycle_history(store, category)
    seen: list[RecordedEvent] = []
    with Subscription(
        unique("group"), seen.append, categories=[category], settings=settings
    ).start() as sub:
        # Streams live on several partitions: wait for all of them.
        eventually(
            lambda: (
                readable(names) <= {(e.stream_id, e.version) for e in seen}
                and sub.stats()["hidden"] >= 14
            )
        )
        stats = sub.stats()
    assert {(e.stream_id, e.version) for e in seen} == readable(names)
    assert len(seen) == len(readable(names))
    assert stats["hidden"] == 6 * 3 + 2 + 2 + 1 - len(readable(names)) == 14


class Counts(PostgresProjection):
    """Events per stream, exactly once, into a table of the test's own."""

    def __init__(self, table: str) -> None:
        self.table = table

    def setup(self, conn: psycopg.Connection) -> None:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (stream_id text, version bigint, "
                "PRIMARY KEY (stream_id, version))"
            ).format(sql.Identifier(self.table))
        )

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(self.table)),
            (event.stream_id, event.version),
        )


def _rows(settings: Settings, table: str) -> set[tuple[str, int]]:
    with psycopg.connect(settings.database_url) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not exists or not exists[0]:
            return set()  # the projection's setup has not run yet
        query = sql.SQL("SELECT stream_id, version FROM {}").format(sql.Identifier(table))
        return {(s, int(v)) for s, v in conn.execute(query)}


def test_an_exactly_once_projection_rebuilt_from_offset_0_after_deletions_holds_what_reads_show(
    settings: Settings,
) -> None:
    category = unique("Proj").replace("-", "")
    live, rebuilt = (f"proj_{unique('t').replace('-', '_')}" for _ in range(2))
    stream = f"{category}-doomed"
    with EventStore(settings) as store:
        store.append(stream, [NewEvent(type="E") for _ in range(3)])

        def project(table: str, group: str, until: Callable[[set[tuple[str, int]]], bool]) -> None:
            with Subscription(
                group, Counts(table), categories=[category], settings=settings
            ).start():
                eventually(lambda: until(_rows(settings, table)))

        # Live: it saw the stream before it was deleted, and keeps what it saw.
        group = unique("group")
        project(live, group, lambda rows: len(rows) == 3)
        names = lifecycle_history(store, category)
        store.delete_stream(stream, hard=True)
        project(live, group, lambda rows: readable(names) <= rows)  # the same group goes on
        # Rebuilt from offset 0 (a new group): exactly the readable events, nothing deleted.
        project(rebuilt, unique("group"), lambda rows: readable(names) <= rows)
    assert _rows(settings, rebuilt) == readable(names)
    assert {(stream, v) for v in (1, 2, 3)} <= _rows(settings, live)
