"""The subscriptions' hub (indexer/sse_hub.py) over an in-memory index: shared reads, merging,
bounded mailboxes, a stalled subscriber detached without stalling the others, wake-ups by key,
the gate of the readers' reads, a transient read failure retried."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from indexer import sse_hub
from indexer.sse_hub import Feed, Hub
from indexer.wakeups import ANYTHING, Touched, Watch, Watches
from kafkastore.errors import Unavailable
from kafkastore.records import RecordedEvent
from tests.indexer.hub_feeds import Subscriber, until


@dataclass(frozen=True, slots=True)
class _Page:
    events: tuple[RecordedEvent, ...]
    next_position: int


class MemoryIndex:
    """What the hub uses of AsyncReads: ``$all`` and category pages, the listener's watches
    (each commit touches its stream, as the indexer's notification says)."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.watches = Watches()
        self.reads = 0

    @property
    def index_generation(self) -> int:
        return self.watches.generation

    async def listen(self) -> int:
        return self.index_generation

    def watch(self, kind: str, name: str) -> Watch:
        return self.watches.acquire(kind, name)

    def unwatch(self, watch: Watch) -> None:
        self.watches.release(watch)

    def commit(self, stream: str, *types: str, blob: str = "") -> None:
        self.commit_streams([stream], *types, blob=blob)

    def commit_streams(self, streams: Sequence[str], *types: str, blob: str = "") -> None:
        """One commit of ``types`` in each of ``streams``; its notification names them all."""
        for stream, t in ((s, t) for s in streams for t in types):
            version = sum(1 for e in self.events if e.stream_id == stream) + 1
            self.events.append(
                RecordedEvent(
                    id=uuid.uuid4(),
                    stream_id=stream,
                    version=version,
                    type=t,
                    data={"t": t, "blob": blob},
                    raw=b"{}",
                    metadata={},
                    created_at=datetime.now(UTC),
                    partition=0,
                    offset=len(self.events),
                    global_position=len(self.events) + 1,
                )
            )
        self.watches.touch(Touched(streams=frozenset(streams)))

    async def read_all(
        self, *, from_position: int, limit: int, types: Sequence[str] | None
    ) -> _Page:
        return await self.read_category("", from_position=from_position, limit=limit, types=types)

    async def read_category(
        self, category: str, *, from_position: int, limit: int, types: Sequence[str] | None
    ) -> _Page:
        self.reads += 1
        await asyncio.sleep(0)  # a read takes a turn of the loop, as a real one does
        found = tuple(
            e
            for e in self.events
            if (e.global_position or 0) >= from_position
            and (not category or e.stream_id.startswith(category + "-"))
            and (types is None or e.type in types)
        )[:limit]
        if len(found) >= limit:
            return _Page(found, (found[-1].global_position or 0) + 1)
        return _Page(found, max(from_position, len(self.events) + 1))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_many_subscribers_at_the_head_cost_one_index_read_per_commit() -> None:
    async def main() -> None:
        index = MemoryIndex()
        index.commit("Cart-1", "A", "B")
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        subscribers = [Subscriber(hub, Feed("all", "$all", 3, None)) for _ in range(500)]
        await until(lambda: hub.subscribers() == 500)
        assert len(hub.readers) == 1
        reads_before = index.reads
        for n in range(5):
            index.commit("Cart-1", f"E{n}")
            await until(lambda n=n: all(len(s.seen) == n + 1 for s in subscribers))
        assert index.reads - reads_before == 5  # one read per commit, for all 500
        assert all(s.seen == [3, 4, 5, 6, 7] for s in subscribers)
        for s in subscribers:
            await s.stop()
        await until(lambda: not hub.readers)

    run(main())


def test_a_burst_of_subscribers_at_a_reader_s_position_joins_it_without_reading() -> None:
    async def main() -> None:
        index = MemoryIndex()
        index.commit("Cart-1", "A")
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        first = Subscriber(hub, Feed("all", "$all", 2, None))
        await until(lambda: hub.subscribers() == 1)
        reads_before = index.reads
        burst = [Subscriber(hub, Feed("all", "$all", 2, None)) for _ in range(300)]
        await until(lambda: hub.subscribers() == 301)
        assert index.reads == reads_before  # no catch-up read: the reader is at their start
        index.commit("Cart-1", "B")
        await until(lambda: all(s.seen == [2] for s in [first, *burst]))
        for s in [first, *burst]:
            await s.stop()

    run(main())


def test_catch_up_reads_queue_for_a_bounded_number_of_pool_connections() -> None:
    async def main() -> None:
        index = MemoryIndex()
        for i in range(20):
            index.commit(f"Order-{i}", "Placed")
        running = peak = 0
        read = index.read_category

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await asyncio.sleep(0.005)
                return await read(*args, **kwargs)
            finally:
                running -= 1

        index.read_category = counting  # type: ignore[method-assign]
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        subscribers = [Subscriber(hub, Feed("all", "$all", 1 + i % 20, None)) for i in range(200)]
        await until(lambda: hub.subscribers() == 200, timeout=20)
        assert peak <= sse_hub.CATCHUP_READS
        for i, s in enumerate(subscribers):
            assert s.seen == list(range(1 + i % 20, 21))
            await s.stop()

    run(main())


def test_subscribers_that_start_behind_catch_up_on_their_own_then_share_the_reader() -> None:
    async def main() -> None:
        index = MemoryIndex()
        for i in range(12):
            index.commit(f"Order-{i}", "Placed", "Paid")
        hub = Hub(index, page_events=5, closing=asyncio.Event())  # type: ignore[arg-type]
        starts = [1, 7, 19, 25, 25]
        subscribers = [Subscriber(hub, Feed("all", "$all", s, None)) for s in starts]
        await until(lambda: hub.subscribers() == len(starts))
        await until(lambda: len(hub.readers) == 1)  # readers at the same head merged
        for i in range(3):
            index.commit("Order-x", f"Live{i}")
        await until(lambda: all(s.seen and s.seen[-1] == 27 for s in subscribers))
        for start, s in zip(starts, subscribers, strict=True):
            assert s.seen == list(range(start, 28))  # in order, none skipped, none twice
            await s.stop()

    run(main())


def test_category_and_type_filters_are_separate_feed_keys() -> None:
    async def main() -> None:
        index = MemoryIndex()
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        carts = Subscriber(hub, Feed("category", "Cart", 1, None))
        paid = Subscriber(hub, Feed("all", "$all", 1, ("Paid",)))
        everything = Subscriber(hub, Feed("all", "$all", 1, None))
        await until(lambda: hub.subscribers() == 3)
        index.commit("Cart-1", "Added", "Paid")
        index.commit("Order-1", "Paid")
        await until(lambda: len(everything.seen) == 3 and len(paid.seen) == 2)
        await until(lambda: len(carts.seen) == 2)
        assert (carts.seen, paid.seen, everything.seen) == ([1, 2], [2, 3], [1, 2, 3])
        for s in (carts, paid, everything):
            await s.stop()

    run(main())


def test_a_stalled_subscriber_is_detached_with_a_bounded_mailbox_and_others_go_on() -> None:
    async def main() -> None:
        index = MemoryIndex()
        hub = Hub(index, page_events=10, closing=asyncio.Event())  # type: ignore[arg-type]
        fast = [Subscriber(hub, Feed("all", "$all", 1, None)) for _ in range(3)]
        stalled = Subscriber(hub, Feed("all", "$all", 1, None), reading=False)
        first = asyncio.ensure_future(anext(stalled.chunks))  # takes one message, then no more
        await until(lambda: hub.subscribers() == 4)
        blob = "x" * 100_000
        for n in range(60):  # 60 pages of 10 events of ~100 kB: 60 MB for a stalled reader
            index.commit("Big-1", *(f"T{n}" for _ in range(10)), blob=blob)
            await until(lambda n=n: all(len(s.seen) == (n + 1) * 10 for s in fast))
        assert (await first).startswith(b"id: 1\n")
        (reader,) = hub.readers.values()
        assert len(reader.mailboxes) == 3  # the stalled one was detached
        assert all(s.seen == list(range(1, 601)) for s in fast)
        await stalled.stop()
        for s in fast:
            await s.stop()

    run(main())


def test_a_detached_subscriber_resumes_on_its_own_and_misses_nothing() -> None:
    async def main() -> None:
        index = MemoryIndex()
        hub = Hub(index, page_events=5, closing=asyncio.Event())  # type: ignore[arg-type]
        slow = Subscriber(hub, Feed("all", "$all", 1, None), reading=False)
        pending = asyncio.ensure_future(anext(slow.chunks))
        await until(lambda: hub.subscribers() == 1)
        for n in range(sse_hub.MAILBOX_PAGES + 4):  # more pages than a mailbox holds
            index.commit("Order-1", *(f"E{n}" for _ in range(5)))
            await asyncio.sleep(0.01)  # one page per commit
        assert hub.subscribers() == 0  # its mailbox overflowed: detached
        total = len(index.events)
        seen = [int((await pending).split(b"\n", 1)[0][4:])]
        while len(seen) < total:
            chunk = await asyncio.wait_for(anext(slow.chunks), 5)
            if chunk.startswith(b"id: "):
                seen.append(int(chunk.split(b"\n", 1)[0][4:]))
        assert seen == list(range(1, total + 1))
        following = asyncio.ensure_future(anext(slow.chunks))
        await until(lambda: hub.subscribers() == 1)  # back on a reader at the head
        index.commit("Order-1", "Next")
        assert (await asyncio.wait_for(following, 5)).startswith(b"id: %d\n" % (total + 1))
        await slow.stop()

    run(main())


def test_every_subscriber_ends_at_shutdown_and_the_readers_stop() -> None:
    async def main() -> None:
        index = MemoryIndex()
        closing = asyncio.Event()
        hub = Hub(index, page_events=50, closing=closing)  # type: ignore[arg-type]
        subscribers = [Subscriber(hub, Feed("category", "Cart", 1, None)) for _ in range(10)]
        await until(lambda: hub.subscribers() == 10)
        closing.set()  # what Subscribers.close does: the flag, then every feed's wake-up
        for s in subscribers:
            s.wake.set()
        await hub.close()
        await asyncio.wait_for(asyncio.gather(*(s.task for s in subscribers if s.task)), 5)
        assert not hub.readers

    run(main())


def test_a_reader_that_reaches_another_s_position_merges_into_it() -> None:
    async def main() -> None:
        index = MemoryIndex()
        index.commit("Cart-1", "A")
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        behind, ahead = sse_hub.Mailbox(asyncio.Event()), sse_hub.Mailbox(asyncio.Event())
        hub.join(sse_hub.Key("all", "$all", None, 2), ahead, index.index_generation)
        hub.join(sse_hub.Key("all", "$all", None, 1), behind, index.index_generation - 1)
        await until(lambda: len(hub.readers) == 1)  # the one at 1 read event 1, moved to 2
        (reader,) = hub.readers.values()
        assert reader.key.at == 2 and reader.mailboxes == {behind, ahead}
        index.commit("Cart-1", "B")
        await until(lambda: len(ahead.items) == 1 and len(behind.items) == 2)
        got = [
            [m for p in box.items if isinstance(p, sse_hub.Page) for _, m in p.messages]
            for box in (behind, ahead)
        ]
        assert [len(g) for g in got] == [2, 1] and got[0][1] is got[1][0]
        hub.leave(behind)
        hub.leave(ahead)
        await until(lambda: not hub.readers)

    run(main())


def test_a_page_s_bytes_are_shared_by_every_subscriber() -> None:
    async def main() -> None:
        index = MemoryIndex()
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        mailboxes = [sse_hub.Mailbox(asyncio.Event()) for _ in range(3)]
        for box in mailboxes:
            hub.join(sse_hub.Key("all", "$all", None, 1), box, index.index_generation)
        index.commit("Cart-1", "A")
        await until(lambda: all(box.items for box in mailboxes))
        pages = [box.take() for box in mailboxes]
        assert all(p is pages[0] for p in pages)
        assert isinstance(pages[0], sse_hub.Page)
        ((stream, chunk),) = pages[0].messages
        assert stream == "Cart-1"
        assert orjson.loads(chunk.split(b"data: ", 1)[1])["type"] == "A"
        for box in mailboxes:
            hub.leave(box)
        await until(lambda: not hub.readers)

    run(main())


@pytest.mark.parametrize("types", [("B", "A"), ("A", "B", "A")])
def test_a_type_filter_is_one_key_whatever_the_order(types: tuple[str, ...]) -> None:
    from indexer.sse import _types

    assert _types(list(types)) == ("A", "B")


def test_a_commit_wakes_only_the_readers_of_all_and_of_the_streams_it_touched() -> None:
    async def main() -> None:
        index = MemoryIndex()
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        quiet = [Subscriber(hub, Feed("category", f"Quiet{i}", 1, None)) for i in range(50)]
        everything = Subscriber(hub, Feed("all", "$all", 1, None))
        await until(lambda: hub.subscribers() == 51)
        reads_before = hub.reads_done
        index.commit("Quiet7-1", "A")
        await until(lambda: quiet[7].seen == [1] and everything.seen == [1])
        await asyncio.sleep(0.05)  # any other reader woken would have read by now
        assert hub.reads_done - reads_before == 2  # $all's reader and Quiet7's, not the 49
        index.commit_streams([f"Quiet{i}-1" for i in range(50)], "B")
        await until(lambda: all(len(s.seen) == (2 if i == 7 else 1) for i, s in enumerate(quiet)))
        assert [s.seen for s in quiet] == [[1, 9] if i == 7 else [2 + i] for i in range(50)]
        for s in [*quiet, everything]:
            await s.stop()
        assert index.watches.watched() == 0  # every feed and reader gave its watch back

    run(main())


def test_a_notification_that_names_nothing_wakes_every_reader() -> None:
    async def main() -> None:
        index = MemoryIndex()
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        feeds = [Subscriber(hub, Feed("category", f"Any{i}", 1, None)) for i in range(20)]
        await until(lambda: hub.subscribers() == 20)
        reads_before = hub.reads_done
        index.watches.touch(ANYTHING)  # an old indexer's plain payload, or a reconnect
        await until(lambda: hub.reads_done - reads_before == 20)
        for s in feeds:
            await s.stop()

    run(main())


def test_the_reads_of_many_readers_woken_at_once_queue_at_the_gate() -> None:
    async def main() -> None:
        index = MemoryIndex()
        read = index.read_category

        async def slow(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.005)
            return await read(*args, **kwargs)

        index.read_category = slow  # type: ignore[method-assign]
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        feeds = [Subscriber(hub, Feed("category", f"Gate{i}", 1, None)) for i in range(100)]
        await until(lambda: hub.subscribers() == 100, timeout=20)
        index.commit_streams([f"Gate{i}-1" for i in range(100)], "A")
        await until(lambda: all(s.seen for s in feeds), timeout=20)
        assert 1 < hub.running_peak <= sse_hub.HUB_READS
        for s in feeds:
            await s.stop()

    run(main())


def test_a_read_that_fails_for_a_transient_reason_is_retried_and_no_feed_ends() -> None:
    async def main() -> None:
        index = MemoryIndex()
        read = index.read_category
        failures = 3

        async def failing(*args: Any, **kwargs: Any) -> Any:
            nonlocal failures
            if failures and kwargs.get("from_position", 1) > 1:  # only the readers' reads
                failures -= 1
                raise Unavailable("PostgreSQL pool exhausted: couldn't get a connection")
            return await read(*args, **kwargs)

        index.read_category = failing  # type: ignore[method-assign]
        index.commit("Retry-1", "A")
        hub = Hub(index, page_events=50, closing=asyncio.Event())  # type: ignore[arg-type]
        feeds = [Subscriber(hub, Feed("category", "Retry", 1, None)) for _ in range(5)]
        await until(lambda: hub.subscribers() == 5)
        index.commit("Retry-1", "B")
        await until(lambda: all(s.seen == [1, 2] for s in feeds), timeout=10)
        assert hub.reads_failed == 3
        assert all(s.task is not None and not s.task.done() for s in feeds)  # none ended
        for s in feeds:
            await s.stop()

    run(main())
