"""The subscriptions' hub (indexer/sse_hub.py) over an in-memory index: shared reads, merging,
bounded mailboxes, a stalled subscriber detached without stalling the others."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from indexer import sse_hub
from indexer.sse_hub import Feed, Hub, follow
from kafkastore.records import RecordedEvent

HEARTBEAT = 15.0


@dataclass(frozen=True, slots=True)
class _Page:
    events: tuple[RecordedEvent, ...]
    next_position: int


class MemoryIndex:
    """What the hub uses of AsyncReads: ``$all`` and category pages, the index generation."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.index_generation = 0
        self.reads = 0
        self._event = asyncio.Event()

    async def listen(self) -> int:
        return self.index_generation

    async def wait_for_index(self, generation: int, timeout: float) -> int:
        if self.index_generation == generation:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self.index_generation

    def commit(self, stream: str, *types: str, blob: str = "") -> None:
        for t in types:
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
        self.index_generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

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


class Subscriber:
    """One :func:`follow` feed read by a task into ``seen`` (global positions)."""

    def __init__(self, hub: Hub, feed: Feed, *, reading: bool = True) -> None:
        self.wake = asyncio.Event()
        self.left = False
        self.seen: list[int] = []
        self.chunks: AsyncGenerator[bytes, None] = follow(
            hub,
            feed,
            heartbeat=HEARTBEAT,
            wake=self.wake,
            stopped=lambda: self.left or hub.closing.is_set(),
        )
        self.task = asyncio.create_task(self._read()) if reading else None

    async def _read(self) -> None:
        async for chunk in self.chunks:
            if chunk.startswith(b"id: "):
                self.seen.append(int(chunk.split(b"\n", 1)[0][4:]))

    async def stop(self) -> None:
        self.left = True
        self.wake.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)
        await self.chunks.aclose()


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


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
