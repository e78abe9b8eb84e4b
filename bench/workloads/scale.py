"""``kafkastore bench --scale``: what grows with the store.

The store is filled through the real writer (``AsyncEventStore.append``, 100-event appends to
fresh ``fill-*`` streams, 64 in flight) while the run's indexer indexes them, so the index rows
are exactly those of production appends; the fill goes on until the index holds each point's
count of events (~5M at the last point; with ``--quick`` 1/20 of it). At each point:

- append throughput: the pipelined in-process workload for one measured window;
- a 100-event stream read (``GET /streams/{id}?limit=100`` of a ``fill-*`` stream, each one
  exactly 100 events), 8 keep-alive connections: p50/p99;
- a category page and an ``$all`` page from the middle of the store
  (``GET /categories/fill?from_position=<half>&limit=100``, ``GET /all?...``), one at a time;
- PostgreSQL bytes on disk (``pg_total_relation_size``: table, indexes and TOAST) of every table,
  per indexed event.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench import drive
from bench.context import Context, run_loop
from bench.httpclient import Connection
from bench.payload import EVENT_TYPE, event_data
from bench.stats import summarize
from bench.workloads import appends
from kafkastore import pg
from kafkastore.records import NewEvent

POINTS = {False: (0, 1_000_000, 5_000_000), True: (0, 50_000, 250_000)}
FIRST_POINT_EVENTS = 20_000
FILL_PER_APPEND = 100
FILL_IN_FLIGHT = 64
PAGE_REQUESTS = {False: 300, True: 60}
READ_CONNECTIONS = 8
TABLE_SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = current_schema()
ORDER BY 2 DESC
"""


def indexed_events(ctx: Context) -> int:
    with pg.connect(ctx.settings.database_url, autocommit=True) as conn, pg.translated():
        row = conn.execute("SELECT last_position FROM index_head").fetchone()
    return int(row[0]) if row else 0


@dataclass(slots=True)
class Filled:
    """The ``fill-*`` streams made so far (``fill-0000000`` .. ``streams - 1``)."""

    streams: int = 0


def fill(ctx: Context, target: int, made: Filled) -> dict[str, Any]:
    """Append until the index holds ``target`` events; progress shows written and indexed."""
    have = indexed_events(ctx)
    if have >= target:
        return {"filled_events": 0, "fill_s": 0.0}
    store = ctx.astore()
    seq = itertools.count()
    to_write = target - have
    written = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal written
        while written < to_write:
            written += FILL_PER_APPEND
            stream = f"fill-{made.streams:07d}"
            made.streams += 1
            events = [
                NewEvent(type=EVENT_TYPE, data=event_data(next(seq)))
                for _ in range(FILL_PER_APPEND)
            ]
            await store.append(stream, events, "no_stream")

    async def run(update: Any) -> None:
        tasks = [asyncio.create_task(worker()) for _ in range(FILL_IN_FLIGHT)]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            rate = written / max(time.perf_counter() - started, 1e-9)
            update(have + written, f"written {have + written:,} ({rate:,.0f}/s)")
        for t in tasks:
            t.result()

    with drive.bar(ctx.progress, f"fill to {target:,} events", target) as update:
        run_loop(run(update))
    with drive.bar(ctx.progress, f"index to {target:,} events", target) as update:
        deadline = time.perf_counter() + 3600.0
        while (done := indexed_events(ctx)) < target and time.perf_counter() < deadline:
            update(done, f"indexed {done:,}")
            time.sleep(1.0)
    return {"filled_events": written, "fill_s": round(time.perf_counter() - started, 1)}


async def _timed_gets(host: str, port: int, paths: list[str], connections: int) -> list[float]:
    conns = [Connection(host, port) for _ in range(connections)]
    queue = list(reversed(paths))
    latencies: list[float] = []

    async def run(conn: Connection) -> None:
        while queue:
            path = queue.pop()
            t0 = time.perf_counter()
            resp = await conn.request("GET", path)
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {resp.status} {resp.body[:200]!r}")
            latencies.append((time.perf_counter() - t0) * 1000.0)

    try:
        await asyncio.gather(*(run(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return latencies


def measure(ctx: Context, point: int, filled_streams: int) -> dict[str, Any]:
    url = urlsplit(ctx.env.api_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    ctx.settle(timeout=600.0)
    total = indexed_events(ctx)
    n = PAGE_REQUESTS[ctx.quick]
    rng = random.Random(point)
    out: dict[str, Any] = {"target_events": point, "indexed_events": total}
    if filled_streams:
        reads = [f"/streams/fill-{rng.randrange(filled_streams):07d}?limit=100" for _ in range(n)]
        out["stream_read"] = summarize(run_loop(_timed_gets(host, port, reads, READ_CONNECTIONS)))
        middle = max(total // 2, 1)
        for key, path in (
            ("category_page", f"/categories/fill?from_position={middle}&limit=100"),
            ("all_page", f"/all?from_position={middle}&limit=100"),
        ):
            out[key] = summarize(run_loop(_timed_gets(host, port, [path] * n, 1)))
    append = appends.inproc_pipelined(
        ctx, f"append at {total:,} events", per_append=10, prefix=f"scale{point}"
    )
    out["append_events_per_s"] = append["events_per_s"]
    out["append_p99_ms"] = append.get("p99_ms")
    out["disk"] = disk(ctx)
    return out


def disk(ctx: Context) -> dict[str, Any]:
    """Bytes on disk of every table (with its indexes and TOAST), and per indexed event."""
    with pg.connect(ctx.settings.database_url, autocommit=True) as conn, pg.translated():
        rows = conn.execute(TABLE_SIZES).fetchall()
        head = conn.execute("SELECT last_position FROM index_head").fetchone()
    events = int(head[0]) if head else 0
    tables = {str(name): int(size) for name, size in rows}
    total = sum(tables.values())
    return {
        "tables_bytes": tables,
        "total_bytes": total,
        "bytes_per_event": round(total / events, 1) if events else None,
        "bytes_per_event_by_table": {  # the tables of at least 1% of the total
            k: round(v / events, 1) for k, v in tables.items() if events and v * 100 >= total
        },
    }


def scale(ctx: Context, name: str) -> dict[str, Any]:
    """Fill to each point and measure there; the first point is the store as the run made it
    (the warm-up's events and :data:`FIRST_POINT_EVENTS` of ``fill-*`` streams to read)."""
    made = Filled()
    points: list[dict[str, Any]] = []
    for point in POINTS[ctx.quick]:
        # The first point ("0") is a store with just enough 100-event streams to read.
        target = point or indexed_events(ctx) + FIRST_POINT_EVENTS
        filled = fill(ctx, target, made)
        result = measure(ctx, point, made.streams)
        result.update(filled)
        points.append(result)
        drive.console.print(
            f"{name}: at {result['indexed_events']:,} events: appends "
            f"{result['append_events_per_s']:,.0f}/s, read p99 "
            f"{(result.get('stream_read') or {}).get('p99_ms')} ms"
        )
    return {"points": points, "concurrency": "see bench/README.md (--scale)", **growth(points)}


def growth(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Each measured cost at the last point divided by the same at the first (> 1: it grew)."""
    if len(points) < 2:
        return {}
    first, last = points[0], points[-1]

    def ratio(a: Any, b: Any) -> float | None:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0:
            return round(b / a, 3)
        return None

    out: dict[str, float | None] = {
        "append_rate": ratio(first.get("append_events_per_s"), last.get("append_events_per_s")),
        "bytes_per_event": ratio(
            first["disk"].get("bytes_per_event"), last["disk"].get("bytes_per_event")
        ),
    }
    for key in ("stream_read", "category_page", "all_page"):
        for q in ("p50_ms", "p99_ms"):
            out[f"{key}_{q}"] = ratio((first.get(key) or {}).get(q), (last.get(key) or {}).get(q))
    return {"growth_last_over_first": out}
