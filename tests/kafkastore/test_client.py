"""The in-process client over real services: both ways of opening an AsyncEventStore, and the
client's reads (read-your-writes, woken by the indexer's NOTIFY) in both flavours."""

from __future__ import annotations

import asyncio

import pytest

from kafkastore.client import AsyncEventStore, EventStore
from kafkastore.config import Settings
from kafkastore.errors import Unavailable
from kafkastore.records import NewEvent
from tests.indexer.helpers import running_indexer
from tests.support import unique


def test_async_connect_works_with_async_with_and_with_await(settings: Settings) -> None:
    stream = unique("Connect")

    async def scenario() -> tuple[int, int]:
        async with AsyncEventStore.connect(settings=settings) as store:
            first = await store.append(stream, [NewEvent(type="A", data={})], "no_stream")
        with pytest.raises(Unavailable):  # the block closed the store
            await store.append(stream, [NewEvent(type="A", data={})])
        again = await AsyncEventStore.connect(settings=settings)
        try:
            second = await again.append(stream, [NewEvent(type="B", data={})], 1)
        finally:
            await again.close()
        return first.to_version, second.to_version

    assert asyncio.run(scenario()) == (1, 2)


def test_both_clients_read_their_own_writes(settings: Settings) -> None:
    stream = unique("Client")

    async def read_async() -> tuple[list[str], int]:
        async with AsyncEventStore.connect(settings=settings) as store:
            page = await store.read_stream(stream, min_version=2, timeout=30)
            state = await store.stream_state(stream)
            return [e.type for e in page.events], state.indexed_version

    with running_indexer(settings), EventStore.connect(settings=settings) as store:
        version = store.append(stream, [NewEvent(type="A", data={}), NewEvent(type="B", data={})])
        page = store.read_stream(stream, min_version=version.to_version, timeout=30)
        everything = store.read_all(from_position=page.events[0].global_position or 1)
        from_async = asyncio.run(read_async())

    assert ([e.type for e in page.events], page.index_behind) == (["A", "B"], False)
    assert [e.type for e in everything.events if e.stream_id == stream] == ["A", "B"]
    assert from_async == (["A", "B"], 2)


def test_async_reads_open_works_with_async_with_and_with_await(settings: Settings) -> None:
    from indexer.reads import AsyncReads

    async def scenario() -> tuple[bool, bool, bool]:
        async with AsyncReads.open(settings) as reads:
            page = await reads.read_all(from_position=1, limit=1)
        closed_by_block = reads._pool.closed
        again = await AsyncReads.open(settings)
        try:
            second = await again.read_all(from_position=1, limit=1)
        finally:
            await again.close()
        return page.next_position is not None, closed_by_block, second.next_position is not None

    assert asyncio.run(scenario()) == (True, True, True)
