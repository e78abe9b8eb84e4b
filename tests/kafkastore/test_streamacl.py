"""The stream-ACL cache on its own (kafkastore.streamacl), with a counting loader and a fake
clock: entries live at most ``ttl``, ``forget`` drops them at once, concurrent misses share one
load, a change notified during a load is not cached, a bad stored ACL grants nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kafkastore import auth
from kafkastore.streamacl import DENY_ALL, StreamAclCache


class Store:
    def __init__(self, acls: dict[str, Any]) -> None:
        self.acls = acls
        self.loads: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def load(self, stream_ids: list[str]) -> Mapping[str, Any]:
        self.loads.append(list(stream_ids))
        snapshot = {s: self.acls.get(s) for s in stream_ids}
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cache(store: Store, clock: Clock, ttl: float = 1.0) -> StreamAclCache:
    return StreamAclCache("unused", ttl=ttl, load=store.load, clock=clock)


def test_a_hot_stream_is_answered_from_memory_until_the_ttl_passes() -> None:
    store, clock = Store({"a-1": {"read": ["bob"]}}), Clock()
    cache = _cache(store, clock)

    async def run() -> None:
        assert await cache("a-1") == auth.Acl({"read": ("bob",)})
        clock.now += 0.99
        assert await cache("a-1") == auth.Acl({"read": ("bob",)})
        assert len(store.loads) == 1
        store.acls["a-1"] = {"read": ["carol"]}
        clock.now += 0.02
        assert await cache("a-1") == auth.Acl({"read": ("carol",)})
        assert len(store.loads) == 2

    asyncio.run(run())


def test_a_stream_without_an_acl_is_cached_too() -> None:
    store, clock = Store({}), Clock()
    cache = _cache(store, clock)

    async def run() -> None:
        assert await cache("a-1") is None
        assert await cache("a-1") is None
        assert store.loads == [["a-1"]]

    asyncio.run(run())


def test_forget_drops_one_entry_or_all_at_once() -> None:
    store, clock = Store({"a-1": {"read": ["bob"]}, "a-2": None}), Clock()
    cache = _cache(store, clock)

    async def run() -> None:
        await cache.acls(["a-1", "a-2"])
        store.acls["a-1"] = {"read": ["carol"]}
        cache.forget("a-1")
        assert await cache("a-1") == auth.Acl({"read": ("carol",)})
        assert store.loads == [["a-1", "a-2"], ["a-1"]]
        cache.forget()
        await cache.acls(["a-1", "a-2"])
        assert store.loads[-1] == ["a-1", "a-2"]

    asyncio.run(run())


def test_the_misses_of_a_batch_cost_one_load_and_concurrent_misses_share_it() -> None:
    store, clock = Store({"a-1": {"write": ["bob"]}}), Clock()
    cache = _cache(store, clock)

    async def run() -> None:
        store.gate = asyncio.Event()
        first = asyncio.create_task(cache.acls(["a-1", "a-2", "a-1"]))
        await asyncio.sleep(0)
        second = asyncio.create_task(cache.acls(["a-2"]))
        await asyncio.sleep(0)
        store.gate.set()
        assert await first == {"a-1": auth.Acl({"write": ("bob",)}), "a-2": None}
        assert await second == {"a-2": None}
        assert store.loads == [["a-1", "a-2"]]

    asyncio.run(run())


def test_a_change_notified_while_loading_is_not_hidden_by_the_stale_load() -> None:
    store, clock = Store({"a-1": {"read": ["bob"]}}), Clock()
    cache = _cache(store, clock)

    async def run() -> None:
        store.gate = asyncio.Event()
        stale = asyncio.create_task(cache("a-1"))
        await asyncio.sleep(0)
        store.acls["a-1"] = {"read": ["carol"]}
        cache.forget("a-1")  # the NOTIFY of the change arrives before the load answers
        store.gate.set()
        await stale
        store.gate = None
        assert await cache("a-1") == auth.Acl({"read": ("carol",)})

    asyncio.run(run())


def test_a_stored_acl_that_does_not_parse_grants_nothing() -> None:
    store, clock = Store({"a-1": {"read": "bob"}, "a-2": ["not", "an", "object"]}), Clock()
    cache = _cache(store, clock)
    bob = auth.Principal("bob")
    resource = auth.Resource("stream", "a-1")

    async def run() -> None:
        found = await cache.acls(["a-1", "a-2"])
        assert found == {"a-1": DENY_ALL, "a-2": DENY_ALL}
        for action in auth.ACL_ACTIONS:
            assert not auth.decide(
                bob, action, resource, auth.Policy().acls(resource, stream_acl=found["a-1"])
            )

    asyncio.run(run())


def test_a_failed_load_fails_its_waiters_and_is_not_cached() -> None:
    clock = Clock()
    calls = 0

    async def failing(stream_ids: list[str]) -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("down")

    cache = StreamAclCache("unused", ttl=1.0, load=failing, clock=clock)

    async def run() -> None:
        results = await asyncio.gather(cache("a-1"), cache("a-1"), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert calls == 1
        assert isinstance(
            (await asyncio.gather(cache("a-1"), return_exceptions=True))[0], RuntimeError
        )
        assert calls == 2

    asyncio.run(run())


def test_a_cancelled_request_does_not_cancel_the_load_another_request_waits_for() -> None:
    store, clock = Store({"a-1": {"read": ["bob"]}}), Clock()
    cache = _cache(store, clock)

    async def run() -> None:
        store.gate = asyncio.Event()
        first = asyncio.create_task(cache("a-1"))
        await asyncio.sleep(0)
        second = asyncio.create_task(cache("a-1"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        store.gate.set()
        assert await second == auth.Acl({"read": ("bob",)})
        assert first.cancelled()
        assert store.loads == [["a-1"]]

    asyncio.run(run())
