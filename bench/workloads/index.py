"""The read side: index lag under load, read throughput, and the indexer draining a backlog."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench import drive
from bench.context import DEPTH, PRODUCERS, STREAMS, Context, run_loop
from bench.httpclient import Connection
from bench.payload import EVENT_TYPE, OwnedStreams, event_data, expected, split, stream_ids
from bench.stats import summarize
from kafkastore import pg, topic
from kafkastore.client import AsyncEventStore
from kafkastore.records import NewEvent

PROBES_PER_S = 40.0
LAG_FALLBACK_EVENTS_PER_S = 2000.0


def _hostport(ctx: Context) -> tuple[str, int]:
    url = urlsplit(ctx.env.api_url)
    return url.hostname or "127.0.0.1", url.port or 80


def index_lag(ctx: Context, name: str) -> dict[str, Any]:
    """10-event appends at half of ``kafkastore_append_inproc``'s rate (open loop); a sample of
    them is followed by ``GET /streams/{id}?min_version=<its version>`` (a long poll) and the lag
    is ack -> the index API answers with that version."""
    measured = ctx.results.get("kafkastore_append_inproc", {}).get("events_per_s")
    note = ""
    if isinstance(measured, (int, float)) and measured > 0:
        events_per_s = measured / 2.0
    else:
        events_per_s = LAG_FALLBACK_EVENTS_PER_S
        note = f"kafkastore_append_inproc not run: fixed {events_per_s:.0f} events/s"
    per_append = 10
    rate = events_per_s / per_append
    every = max(1, round(rate / PROBES_PER_S))
    store = ctx.astore()
    owned = OwnedStreams(stream_ids("lag", STREAMS))
    seq = itertools.count()
    host, port = _hostport(ctx)
    lags: list[float] = []
    e2e: list[float] = []
    behind = 0

    async def main() -> tuple[drive.Tally, dict[str, Any]]:
        nonlocal behind
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(32):
            pool.put_nowait(Connection(host, port))
        measure_from = time.perf_counter() + ctx.timing.warmup

        async def op(i: int) -> int:
            nonlocal behind
            stream, version = owned.take()
            new = None
            t0 = time.perf_counter()
            try:
                events = [
                    NewEvent(type=EVENT_TYPE, data=event_data(next(seq))) for _ in range(per_append)
                ]
                result = await store.append(stream, events, expected(version))
                new = result.to_version
            finally:
                owned.done(stream, new)
            if i % every == 0:
                t_ack = time.perf_counter()
                conn = await pool.get()
                try:
                    resp = await conn.request(
                        "GET",
                        f"/streams/{stream}?from_version={new}&limit=1"
                        f"&min_version={new}&timeout_ms=10000",
                    )
                finally:
                    pool.put_nowait(conn)
                t_seen = time.perf_counter()
                if resp.status != 200 or resp.headers.get("x-index-behind") == "true":
                    behind += 1
                elif t0 >= measure_from:
                    lags.append((t_seen - t_ack) * 1000.0)
                    e2e.append((t_seen - t0) * 1000.0)
            return per_append

        probe = ctx.probe("bench", "indexer", "api")
        try:
            return await drive.run_open_loop(
                ctx.progress, name, op=op, rate=rate, timing=ctx.timing, probe=probe
            )
        finally:
            while not pool.empty():
                await pool.get_nowait().close()

    tally, extra = run_loop(main())
    appends = summarize(tally.latencies_ms)
    result = drive.finish(tally, ctx.timing, extra)
    result.update(summarize(lags))
    result.update(
        {
            "lag_definition": "append acknowledged -> GET /streams/{id}?min_version answers "
            "with it (includes one HTTP round trip)",
            "append_to_readable": summarize(e2e),
            "append_latency": appends,
            "offered_events_per_s": round(events_per_s, 1),
            "probe_every_n_appends": every,
            "probes_timed_out": behind,
            "concurrency": f"open loop, {rate:.0f} appends/s of {per_append} events",
            **ctx.settle(),
        }
    )
    if note:
        result["notes"] = note
    return result


def read_stream(ctx: Context, name: str) -> dict[str, Any]:
    """``GET /streams/{id}`` of 100-event streams (one page each), 8 keep-alive connections."""
    count = 100 if ctx.quick else 200
    streams = stream_ids("read", count)
    store = ctx.astore()
    seq = itertools.count()

    async def fill(stream: str) -> None:
        for v in range(0, 100, 10):
            events = [NewEvent(type=EVENT_TYPE, data=event_data(next(seq))) for _ in range(10)]
            await store.append(stream, events, expected(v))

    async def populate() -> None:
        sem = asyncio.Semaphore(64)

        async def one(s: str) -> None:
            async with sem:
                await fill(s)

        await asyncio.gather(*(one(s) for s in streams))

    run_loop(populate())
    ctx.settle()
    host, port = _hostport(ctx)
    rng = random.Random(6)

    async def main() -> tuple[drive.Tally, dict[str, Any]]:
        conns = [Connection(host, port) for _ in range(PRODUCERS)]
        checked = 0

        def make(conn: Connection) -> Any:
            async def op() -> int:
                nonlocal checked
                resp = await conn.request("GET", f"/streams/{rng.choice(streams)}?limit=100")
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
                if checked < 100:  # full check of the first pages only: parsing costs CPU
                    checked += 1
                    if len(orjson.loads(resp.body)["events"]) != 100:
                        raise RuntimeError("a page without 100 events")
                return 100

            return op

        try:
            return await drive.run_async(
                ctx.progress, name, [make(c) for c in conns], ctx.timing, ctx.probe("api", "bench")
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
            "concurrency": PRODUCERS,
            "streams": count,
            "events_per_stream": 100,
            "client": "8 HTTP/1.1 keep-alive connections, one request in flight each",
        },
    )


def indexer_catchup(ctx: Context, name: str) -> dict[str, Any]:
    """A fresh indexer drains a backlog written while no indexer ran on that topic."""
    backlog = 40_000 if ctx.quick else 200_000
    settings = ctx.settings.replace(topic=f"{ctx.settings.topic}-catchup")
    topic.ensure_topic(settings)
    ctx.env.add_topic(settings.topic)
    per_append = 10
    appends = backlog // per_append
    owners = split(stream_ids("catchup", STREAMS), PRODUCERS * DEPTH)
    seq = itertools.count()

    async def produce(update: Any) -> None:
        store = AsyncEventStore(settings)
        await store.open()
        counter = itertools.count()
        done = 0

        async def worker(owned: OwnedStreams) -> None:
            nonlocal done
            while next(counter) < appends:
                stream, version = owned.take()
                new = None
                try:
                    events = [
                        NewEvent(type=EVENT_TYPE, data=event_data(next(seq)))
                        for _ in range(per_append)
                    ]
                    result = await store.append(stream, events, expected(version))
                    new = result.to_version
                finally:
                    owned.done(stream, new)
                done += per_append
                if done % 2000 == 0:
                    update(done, f"writing backlog {done:,}")

        try:
            await asyncio.gather(*(worker(o) for o in owners))
        finally:
            await store.close()

    with drive.bar(ctx.progress, f"{name} (backlog)", backlog) as update:
        started = time.perf_counter()
        run_loop(produce(update))
        write_s = time.perf_counter() - started
    indexer = ctx.env.start_indexer(settings, "catchup-indexer")
    probe = ctx.probe("indexer", indexer=indexer.pid)
    probe.start()
    t_start = time.perf_counter()
    t_first: float | None = None
    n_first = 0
    done = 0
    deadline = t_start + (900.0 if not ctx.quick else 300.0)
    with (
        drive.bar(ctx.progress, name, backlog) as update,
        pg.connect(settings.database_url, autocommit=True) as conn,
    ):
        while done < backlog and time.perf_counter() < deadline:
            row = conn.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM index_checkpoints WHERE topic = %s",
                (settings.topic,),
            ).fetchone()
            done = int(row[0]) if row else 0
            now = time.perf_counter()
            if done and t_first is None:
                t_first, n_first = now, done
            rate = (done - n_first) / (now - t_first) if t_first and now > t_first else 0.0
            update(done, f"indexing {rate:,.0f} ev/s")
            if done < backlog:
                time.sleep(0.1)
        t_done = time.perf_counter()
        extra = probe.stop()
        indexed_row = conn.execute(
            "SELECT count(*) FROM events WHERE category = %s", ("catchup",)
        ).fetchone()
    indexed = int(indexed_row[0]) if indexed_row else 0
    ctx.env.stop_service(indexer)
    drain_s = t_done - (t_first or t_start)
    events_per_s = (done - n_first) / drain_s if drain_s > 0 else 0.0
    result: dict[str, Any] = {
        "events_per_s": round(events_per_s, 1),
        "backlog_events": backlog,
        "indexed_events": indexed,
        "complete": indexed == backlog,
        "drain_s": round(drain_s, 2),
        "startup_s": round((t_first or t_done) - t_start, 2),
        "events_per_s_including_startup": round(done / (t_done - t_start), 1),
        "backlog_write_s": round(write_s, 2),
        "concurrency": "one indexer process, writers idle",
        **extra,
    }
    if ctx.quick:
        result["notes"] = (
            f"--quick: a {backlog:,}-event backlog (the full run uses 200,000); rate measured "
            "from the first indexed batch to the last"
        )
    else:
        result["notes"] = "rate measured from the first indexed batch to the last"
    return result
