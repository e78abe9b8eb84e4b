"""What the stack costs when little happens: idle, and a steady trickle of one-event appends over
HTTP (100/s and 500/s, open loop) - the CPU of every role and the stack's ms of CPU per event
(the stack: broker, PostgreSQL, API with its writer, indexer; not the benchmark's HTTP client)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench import costs, drive
from bench.context import STREAMS, Context, run_loop
from bench.httpclient import Connection
from bench.payload import EVENT_TYPE, OwnedStreams, event_data, expected, stream_ids

CONNECTIONS = 16
LOAD_GENERATOR = frozenset({"bench"})
"""Not part of "the stack": the HTTP client (the benchmark process)."""


def idle(ctx: Context, name: str) -> dict[str, Any]:
    """The stack with nothing to do for the measured window (30 s; 6 s with ``--quick``)."""
    ctx.settle()
    window = ctx.timing.measure
    probe = ctx.probe("api", "indexer")
    with drive.bar(ctx.progress, name, window) as update:
        started = time.perf_counter()
        probe.start()
        while (elapsed := time.perf_counter() - started) < window:
            update(elapsed, "idle")
            time.sleep(min(0.5, max(window - elapsed, 0.0)))
        extra = probe.stop()
    stack = costs.stack_cores(extra.get("cpu"), without=LOAD_GENERATOR)
    return {
        "events_per_s": 0.0,
        "duration_s": window,
        "concurrency": "idle",
        "stack_cores": stack,
        "stack_pct_of_one_core": None if stack is None else round(100.0 * stack, 2),
        **extra,
    }


def http_trickle(
    ctx: Context, name: str, *, rate: float, prefix: str | None = None
) -> dict[str, Any]:
    """One-event ``POST /streams/{id}`` started at a fixed ``rate`` (open loop), to streams of
    their own (``prefix``; one per rate by default)."""
    url = urlsplit(ctx.env.api_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    owned = OwnedStreams(stream_ids(prefix or f"light{rate:.0f}", STREAMS))
    seq = itertools.count()

    async def main() -> tuple[drive.Tally, dict[str, Any]]:
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(CONNECTIONS):
            pool.put_nowait(Connection(host, port))

        async def op(i: int) -> int:
            stream, version = owned.take()
            new = None
            body = orjson.dumps(
                {
                    "expected_version": expected(version),
                    "events": [{"type": EVENT_TYPE, "data": event_data(next(seq))}],
                }
            )
            conn = await pool.get()
            try:
                resp = await conn.request("POST", f"/streams/{stream}", body)
                if resp.status != 201:
                    raise RuntimeError(f"HTTP {resp.status}: {resp.body[:200]!r}")
                new = version + 1
            finally:
                pool.put_nowait(conn)
                owned.done(stream, new)
            return 1

        try:
            return await drive.run_open_loop(
                ctx.progress,
                name,
                op=op,
                rate=rate,
                timing=ctx.timing,
                probe=ctx.probe("api", "indexer"),
            )
        finally:
            while not pool.empty():
                await pool.get_nowait().close()

    tally, extra = run_loop(main())
    result = drive.finish(
        tally,
        ctx.timing,
        {
            **extra,
            "concurrency": f"open loop, {rate:.0f} one-event appends/s over HTTP",
            "events_per_append": 1,
            "client": f"{CONNECTIONS} keep-alive connections; latency from the scheduled start",
            **ctx.settle(),
        },
    )
    stack = costs.stack_cores(result.get("cpu"), without=LOAD_GENERATOR)
    events = result["events_per_s"]
    if stack is not None and events:
        result["stack_cores"] = stack
        result["stack_ms_per_event"] = round(stack / events * 1000.0, 3)
    return result
