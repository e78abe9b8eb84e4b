"""kafkastore's append workloads: in-process (threads, closed loop), pipelined (asyncio),
HTTP (keep-alive connections), and single appends at a fixed rate."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench import drive
from bench.context import DEPTH, PRODUCERS, STREAMS, Context, run_loop
from bench.httpclient import Connection
from bench.payload import EVENT_TYPE, OwnedStreams, event_data, expected, split, stream_ids
from kafkastore.client import AsyncEventStore, EventStore
from kafkastore.records import NewEvent

LATENCY_RATE = 500.0


def _events(seq: itertools.count[int], k: int) -> list[NewEvent]:
    return [NewEvent(type=EVENT_TYPE, data=event_data(next(seq))) for _ in range(k)]


@contextmanager
def _sync_store(ctx: Context, linger_ms: float | None) -> Iterator[EventStore]:
    """The shared store, or one of its own when ``linger_ms`` differs from the setting."""
    if linger_ms is None:
        yield ctx.store()
        return
    with EventStore(ctx.settings.replace(linger_ms=linger_ms)) as store:
        yield store


@contextmanager
def _async_store(ctx: Context, linger_ms: float | None) -> Iterator[AsyncEventStore]:
    if linger_ms is None:
        yield ctx.astore()
        return
    store = AsyncEventStore(ctx.settings.replace(linger_ms=linger_ms))
    store.writer.open()
    try:
        yield store
    finally:
        store.writer.close()


def inproc(
    ctx: Context, name: str, *, per_append: int, prefix: str, linger_ms: float | None = None
) -> dict[str, Any]:
    """8 threads, each with one ``EventStore.append`` in flight over its own 125 streams."""
    with _sync_store(ctx, linger_ms) as store:
        return _inproc(ctx, name, store, per_append=per_append, prefix=prefix)


def _inproc(
    ctx: Context, name: str, store: EventStore, *, per_append: int, prefix: str
) -> dict[str, Any]:
    seq = itertools.count()

    def make(owned: OwnedStreams) -> Callable[[], int]:
        def op() -> int:
            stream, version = owned.take()
            new = None
            try:
                result = store.append(stream, _events(seq, per_append), expected(version))
                new = result.to_version
            finally:
                owned.done(stream, new)
            return per_append

        return op

    ops = [make(o) for o in split(stream_ids(prefix, STREAMS), PRODUCERS)]
    probe = ctx.probe("bench", "indexer")
    tally, extra = drive.run_threads(ctx.progress, name, ops, ctx.timing, probe)
    return drive.finish(
        tally,
        ctx.timing,
        {
            **extra,
            "producers": PRODUCERS,
            "in_flight_per_producer": 1,
            "concurrency": PRODUCERS,
            "events_per_append": per_append,
            "streams": STREAMS,
            "client": "EventStore.append, one thread per producer (closed loop)",
            "linger_ms": store.settings.linger_ms,
            **ctx.settle(),
        },
    )


def inproc_pipelined(ctx: Context, name: str, *, per_append: int, prefix: str) -> dict[str, Any]:
    """8 producers x 8 appends in flight (64 asyncio tasks over disjoint streams)."""
    store = ctx.astore()
    seq = itertools.count()
    owners = split(stream_ids(prefix, STREAMS), PRODUCERS * DEPTH)

    def make(owned: OwnedStreams) -> Callable[[], Awaitable[int]]:
        async def op() -> int:
            stream, version = owned.take()
            new = None
            try:
                result = await store.append(stream, _events(seq, per_append), expected(version))
                new = result.to_version
            finally:
                owned.done(stream, new)
            return per_append

        return op

    probe = ctx.probe("bench", "indexer")
    tally, extra = run_loop(
        drive.run_async(ctx.progress, name, [make(o) for o in owners], ctx.timing, probe)
    )
    return drive.finish(
        tally,
        ctx.timing,
        {
            **extra,
            "producers": PRODUCERS,
            "in_flight_per_producer": DEPTH,
            "concurrency": PRODUCERS * DEPTH,
            "events_per_append": per_append,
            "streams": STREAMS,
            "client": "AsyncEventStore.append, 64 asyncio tasks on one loop",
            **ctx.settle(),
        },
    )


def _body(seq: itertools.count[int], version: int, k: int) -> bytes:
    return orjson.dumps(
        {
            "expected_version": expected(version),
            "events": [{"type": EVENT_TYPE, "data": event_data(next(seq))} for _ in range(k)],
        }
    )


def http(
    ctx: Context,
    name: str,
    *,
    connections: int,
    prefix: str,
    api_url: str | None = None,
    probe: drive.Probe | None = None,
) -> dict[str, Any]:
    """``POST /streams/{id}`` over ``connections`` keep-alive connections, one request each
    (to the run's API, or to ``api_url``)."""
    url = urlsplit(api_url or ctx.env.api_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    seq = itertools.count()
    per_append = 10

    async def main() -> tuple[drive.Tally, dict[str, Any]]:
        conns = [Connection(host, port) for _ in range(connections)]

        def make(owned: OwnedStreams, conn: Connection) -> Callable[[], Awaitable[int]]:
            async def op() -> int:
                stream, version = owned.take()
                new = None
                try:
                    resp = await conn.request(
                        "POST", f"/streams/{stream}", _body(seq, version, per_append)
                    )
                    if resp.status != 201:
                        raise RuntimeError(f"HTTP {resp.status}: {resp.body[:200]!r}")
                    new = version + per_append
                finally:
                    owned.done(stream, new)
                return per_append

            return op

        owners = split(stream_ids(prefix, STREAMS), connections)
        ops = [make(o, c) for o, c in zip(owners, conns, strict=True)]
        try:
            return await drive.run_async(
                ctx.progress, name, ops, ctx.timing, probe or ctx.probe("api", "indexer", "bench")
            )
        finally:
            for c in conns:
                await c.close()

    tally, extra = run_loop(main())
    return drive.finish(
        tally,
        ctx.timing,
        {
            **extra,
            "producers": connections,
            "in_flight_per_producer": 1,
            "concurrency": connections,
            "events_per_append": per_append,
            "streams": STREAMS,
            "client": (
                f"{connections} HTTP/1.1 keep-alive connections, one request in flight each "
                "(bench.httpclient on uvloop); server: one `kafkastore serve` process"
            ),
            **ctx.settle(),
        },
    )


def latency(ctx: Context, name: str, *, linger_ms: float | None = None) -> dict[str, Any]:
    """Single-event appends started at a fixed 500/s (open loop) over 1 000 streams."""
    with _async_store(ctx, linger_ms) as store:
        prefix = "lat" if linger_ms is None else f"lat{linger_ms:g}"
        return _latency(ctx, name, store, prefix)


def _latency(ctx: Context, name: str, store: AsyncEventStore, prefix: str) -> dict[str, Any]:
    owned = OwnedStreams(stream_ids(prefix, STREAMS))
    seq = itertools.count()

    async def op(i: int) -> int:
        stream, version = owned.take()
        new = None
        try:
            result = await store.append(stream, _events(seq, 1), expected(version))
            new = result.to_version
        finally:
            owned.done(stream, new)
        return 1

    probe = ctx.probe("bench", "indexer")
    tally, extra = run_loop(
        drive.run_open_loop(
            ctx.progress, name, op=op, rate=LATENCY_RATE, timing=ctx.timing, probe=probe
        )
    )
    return drive.finish(
        tally,
        ctx.timing,
        {
            **extra,
            "concurrency": "open loop, 500 appends/s",
            "events_per_append": 1,
            "streams": STREAMS,
            "linger_ms": store.settings.linger_ms,
            "batch_wait_ms": store.settings.batch_wait * 1000,
            "client": "AsyncEventStore.append; latency from the scheduled start",
            **ctx.settle(),
        },
    )
