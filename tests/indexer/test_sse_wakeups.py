"""Wake-ups of live subscriptions against a real indexer, Kafka and PostgreSQL: the indexer's
notification names the streams a commit touched (indexer/wakeups.py), so a feed's reader reads
only when its stream or category was written; many keys woken at once queue for the read pool
instead of exhausting it; a read that fails for a transient reason is retried.

A database of their own: NOTIFY is per database, and the indexers of other tests on a shared one
(possibly of an older version, whose plain payloads mean "anything") would wake every reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from indexer import reads as reads_module
from indexer import sse_hub, wakeups
from indexer.notify import AsyncListener
from indexer.reads import AsyncReads
from indexer.sse_hub import Feed, Hub
from kafkastore import schema
from kafkastore.client import AsyncEventStore
from kafkastore.config import Settings
from kafkastore.records import AppendRequest, NewEvent
from tests.indexer.helpers import running_indexer
from tests.indexer.hub_feeds import Subscriber, until
from tests.support import unique
from tests.support.databases import temporary_database
from tests.support.topics import module_settings


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    """A database and a topic of this module's own, with an indexer; tests use own streams."""
    with temporary_database(database_url) as url:
        schema.migrate(url)
        for s in module_settings(kafka_bootstrap, url):
            with running_indexer(s):
                yield s


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def one(kind: str) -> tuple[NewEvent, ...]:
    return (NewEvent(type=kind, data={"t": kind}),)


# -- the payload ---------------------------------------------------------------------------


def test_the_payload_names_the_streams_else_their_categories_else_nothing() -> None:
    assert wakeups.payload(7, ["Order-1", "Order-2", "Order-1"]) == (
        '7 {"streams":["Order-1","Order-2"]}'
    )
    assert wakeups.parse('7 {"streams":["Order-1","Order-2"]}') == wakeups.Touched(
        streams=frozenset({"Order-1", "Order-2"})
    )
    many = [f"Order-{'x' * 200}-{i}" for i in range(100)]  # 20 kB of stream ids
    assert wakeups.parse(wakeups.payload(9, many)) == wakeups.Touched(
        categories=frozenset({"Order"})
    )
    categories = [f"{'é' * 250}{i}-1" for i in range(100)]  # 50 kB of categories
    assert wakeups.payload(11, categories) == "11"
    for text in ("11", "11 ", "11 [1]", "11 {nope", '11 {"streams": [1]}', '11 {"x": []}'):
        assert wakeups.parse(text).anything  # an old indexer's payload, or one not understood


def test_postgres_delivers_the_largest_payload_and_the_listener_wakes_only_its_keys(
    settings: Settings,
) -> None:
    # Stream ids of 2-byte characters, as many as fit: the payload is as long as it gets.
    fitting: list[str] = []
    while True:
        more = [*fitting, f"{'ü' * 60}-{len(fitting)}"]
        if wakeups.parse(wakeups.payload(1, more)).streams is None:
            break  # one more and the streams no longer fit
        fitting = more
    sent = wakeups.payload(1, fitting)
    assert wakeups.PAYLOAD_BYTES - 130 < len(sent.encode()) <= wakeups.PAYLOAD_BYTES

    async def main() -> None:
        listener = AsyncListener(settings.database_url)
        try:
            await listener.start()
            mine = listener.watch("stream", fitting[3])
            other = listener.watch("stream", "Elsewhere-1")
            category = listener.watch("category", "ü" * 60)
            before = (mine.generation, other.generation, category.generation)
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute("SELECT pg_notify(%s, %s)", ("kafkastore_index", sent))
            await until(lambda: mine.generation != before[0], timeout=10)
            assert category.generation != before[2]
            assert other.generation == before[1]  # not named: not woken
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute("NOTIFY kafkastore_index, '2'")  # an older indexer's payload
            await until(lambda: other.generation != before[1], timeout=10)
            for w in (mine, other, category):
                listener.unwatch(w)
            assert listener.watches.watched() == 0
        finally:
            await listener.close()

    run(main())


# -- readers against the real index --------------------------------------------------------


def test_of_200_feeds_of_200_streams_only_the_written_stream_s_reader_reads(
    settings: Settings,
) -> None:
    prefix = unique("Quiet").replace("-", "")
    streams = [f"{prefix}-{i}" for i in range(200)]

    async def main() -> None:
        async with AsyncReads.open(settings) as reads, AsyncEventStore(settings) as store:
            hub = Hub(reads, page_events=50, closing=asyncio.Event())
            feeds = [Subscriber(hub, Feed("stream", s, 1, None)) for s in streams]
            await until(lambda: hub.subscribers() == 200, timeout=60)
            before = hub.reads_done
            await store.append(streams[17], one("First"))
            await until(lambda: feeds[17].seen == [1], timeout=30)
            await asyncio.sleep(1.0)  # a reader woken by it would have read by now
            assert hub.reads_done - before == 1  # the 199 others did not read
            # Then every stream is written: each feed gets exactly its own events, in order.
            await store.append_many([AppendRequest(s, one("Each")) for s in streams])
            for n in range(2, 5):
                await store.append(streams[3], one(f"More{n}"))
            await until(
                lambda: all(len(f.seen) == (4 if i == 3 else 2 if i == 17 else 1)
                            for i, f in enumerate(feeds)),
                timeout=60,
            )  # fmt: skip
            await asyncio.sleep(0.5)
            for i, f in enumerate(feeds):
                assert f.seen == ([1, 2, 3, 4] if i == 3 else [1, 2] if i == 17 else [1])
                assert f.task is not None and not f.task.done()
            # One read per reader per wake-up, give or take the commits of the batch: far
            # from 200 reads for each of the 5 commits.
            assert hub.reads_done - before < 200 + 3 * 10
            for f in feeds:
                await f.stop()

    run(main())


def test_more_keys_woken_at_once_than_pool_connections_queue_and_no_feed_ends(
    settings: Settings,
) -> None:
    prefix = unique("Many").replace("-", "")
    categories = [f"{prefix}{i}" for i in range(100)]

    async def main() -> None:
        async with (
            AsyncReads.open(settings, max_size=4) as reads,
            AsyncEventStore(settings) as store,
        ):
            hub = Hub(reads, page_events=50, closing=asyncio.Event())
            feeds = [Subscriber(hub, Feed("category", c, 1, None)) for c in categories]
            await until(lambda: hub.subscribers() == 100, timeout=60)
            for n in range(1, 4):  # each commit wakes all 100 readers at once
                await store.append_many([AppendRequest(f"{c}-1", one(f"R{n}")) for c in categories])
                await until(lambda n=n: all(len(f.seen) == n for f in feeds), timeout=60)
            assert all(f.task is not None and not f.task.done() for f in feeds)  # none ended
            assert hub.running_peak <= sse_hub.HUB_READS
            assert hub.reads_failed == 0
            positions = sorted(p for f in feeds for p in f.seen)
            assert len(set(positions)) == 300  # every event to its own category's feed, once
            for f in feeds:
                await f.stop()

    run(main())


def test_a_read_on_a_lost_connection_is_retried_and_the_feeds_go_on(settings: Settings) -> None:
    prefix = unique("Lost").replace("-", "")
    streams = [f"{prefix}-{i}" for i in range(20)]

    async def main() -> None:
        async with AsyncReads.open(settings) as reads, AsyncEventStore(settings) as store:
            hub = Hub(reads, page_events=50, closing=asyncio.Event())
            feeds = [Subscriber(hub, Feed("stream", s, 1, None)) for s in streams]
            await until(lambda: hub.subscribers() == 20, timeout=60)
            # Every idle connection of the read pool is terminated by the server (what a
            # PostgreSQL restart or a failover does to it).
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                ended = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s",
                    (reads_module.APPLICATION_NAME,),
                ).fetchone()
            assert ended is not None and ended[0] >= 1
            await store.append_many([AppendRequest(s, one("AfterTheLoss")) for s in streams])
            await until(lambda: all(f.seen == [1] for f in feeds), timeout=60)
            assert hub.reads_failed >= 1  # some reads met a dead connection ...
            assert all(f.task is not None and not f.task.done() for f in feeds)  # ... none ended
            for f in feeds:
                await f.stop()

    run(main())
