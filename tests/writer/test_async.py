"""The asyncio twin of EventStore."""

from __future__ import annotations

import asyncio

import pytest

from kafkastore.client import AsyncEventStore
from kafkastore.config import Settings
from kafkastore.errors import WrongExpectedVersion
from kafkastore.records import AppendRequest, NewEvent
from tests.support import unique


def test_the_async_store_appends_with_the_same_rules(settings: Settings) -> None:
    async def scenario() -> tuple[list[int], int]:
        async with AsyncEventStore(settings) as store:
            stream = unique("Async")
            results = await asyncio.gather(
                *(store.append(stream, [NewEvent(type="A", data={"i": i})]) for i in range(20))
            )
            with pytest.raises(WrongExpectedVersion):
                await store.append(stream, [NewEvent(type="A", data={})], expected_version=3)
            many = await store.append_many(
                [AppendRequest(unique("Async"), (NewEvent(type="B", data={}),), "no_stream")]
            )
            return sorted(r.to_version for r in results), many[0].to_version

    versions, first = asyncio.run(scenario())
    assert versions == list(range(1, 21))
    assert first == 1
