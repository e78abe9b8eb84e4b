"""Live subscriptions over HTTP (Server-Sent Events): delivery latency, and idle subscribers.

``kafkastore_sse_latency``: 1-event appends at a fixed 100/s (open loop, in-process writer) while
4 SSE clients follow ``/subscribe/all`` filtered to the workload's event type; latency is append
acknowledged -> the event's message parsed by a client (every client, every event).

``kafkastore_sse_idle``: a ``kafkastore serve`` of its own (subscriber limit raised, file
descriptors raised to the hard limit) holds 2 000 (``--quick``) or 5 000 idle subscriptions of
``/subscribe/all`` from the head; then one event is appended, five times, and each time the
delivery to all of them is timed (ack -> the last client parsed it). Recorded: the subscribers
held, the API's RSS before and with them, and the delivery times.

``kafkastore_sse_idle_streams``: an API of its own holds 1 000 idle subscriptions (the default
``sse_max_subscribers``), each of a stream of its own. One event is appended to one of the
streams, five times (five streams): the delivery to its subscriber is timed, and the readers'
index reads (``kafkastore_sse_reads_total`` of the API) are counted: one per append when only the
written stream's reader wakes, 1 000 if every reader read at every commit. Then one event is
appended to each of 100 of the streams at once (100 concurrent appends) and the time until all
100 subscribers have theirs is recorded, with the reads it took.

The clients are raw asyncio streams (:class:`SseClient`): a connection costs one socket and a
small buffer in the benchmark process, so the server, not the client, is what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import resource
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench import drive, procfs
from bench.context import Context, run_loop
from bench.httpclient import Connection
from bench.stats import summarize
from kafkastore.records import NewEvent

LATENCY_RATE = 100.0
"""Appends per second of the latency workload (1 event each)."""
LATENCY_SUBSCRIBERS = 4
IDLE_SUBSCRIBERS = {True: 2000, False: 5000}
IDLE_ROUNDS = 5
QUIET_STREAMS = 1000
"""Subscribers of ``kafkastore_sse_idle_streams``, one stream each (the default subscriber
limit of an API process)."""
WRITTEN_STREAMS = 100
"""Streams of them written at once in its last round."""
CONNECT_CONCURRENCY = 100
"""Connections being opened at once (the server's listen backlog is finite)."""
DELIVERY_TIMEOUT = 120.0


class SseClient:
    """One ``GET`` of an event stream on a raw connection: HTTP/1.1 chunked body, SSE messages."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect and read the response head; raises unless it is 200."""
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(
            b"GET %s HTTP/1.1\r\nhost: %s:%d\r\naccept: text/event-stream\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self.port)
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"subscription answered {status.decode()}: {head[:200]!r}")

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self._reader is not None
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                return
            yield data[:-2]

    async def messages(self) -> AsyncIterator[tuple[str | None, bytes]]:
        """``(id, data)`` of every data message (comments and ``retry:`` skipped)."""
        buffer = b""
        async for chunk in self._chunks():
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                ident: str | None = None
                data: bytes | None = None
                for line in block.split(b"\n"):
                    if line.startswith(b"id: "):
                        ident = line[4:].decode()
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if data is not None:
                    yield ident, data

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()


def _head(api_url: str) -> int:
    """The last global position of the index (``GET /all`` backwards would do as well)."""
    body = httpx.get(f"{api_url}/console/api/overview", timeout=30).json()
    return int(body["indexed_events"])


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def latency(ctx: Context, name: str) -> dict[str, Any]:
    """4 clients on ``/subscribe/all?type=...`` while 1-event appends run at 100/s."""
    kind = f"SseProbe{ctx.env.run_id}"
    host, port = _target(ctx.env.api_url)
    store = ctx.astore()
    acked: dict[int, float] = {}
    received: list[dict[int, float]] = [{} for _ in range(LATENCY_SUBSCRIBERS)]
    seq = itertools.count()

    async def main() -> tuple[drive.Tally, dict[str, Any]]:
        path = f"/subscribe/all?type={kind}&from_position={_head(ctx.env.api_url) + 1}"
        clients = [SseClient(host, port, path) for _ in range(LATENCY_SUBSCRIBERS)]
        for client in clients:
            await client.open()

        async def follow(i: int, client: SseClient) -> None:
            async for _id, data in client.messages():
                n = orjson.loads(data)["data"]["n"]
                received[i][n] = time.perf_counter()

        followers = [asyncio.create_task(follow(i, c)) for i, c in enumerate(clients)]
        await asyncio.sleep(1.0)  # every client caught up and waits at the head
        measure_from = time.perf_counter() + ctx.timing.warmup

        async def op(i: int) -> int:
            n = next(seq)
            started = time.perf_counter()
            await store.append(f"SseLatency-{n % 100}", [NewEvent(type=kind, data={"n": n})])
            if started >= measure_from:
                acked[n] = time.perf_counter()
            return 1

        probe = ctx.probe("api")
        try:
            tally, extra = await drive.run_open_loop(
                ctx.progress, name, op=op, rate=LATENCY_RATE, timing=ctx.timing, probe=probe
            )
            deadline = time.perf_counter() + 30.0
            while time.perf_counter() < deadline and any(
                not acked.keys() <= got.keys() for got in received
            ):
                await asyncio.sleep(0.1)
            return tally, extra
        finally:
            for task in followers:
                task.cancel()
            for client in clients:
                await client.close()

    tally, extra = run_loop(main())
    result = drive.finish(tally, ctx.timing, extra)
    lags = [(got[n] - t) * 1000.0 for got in received for n, t in acked.items() if n in got]
    missing = sum(1 for got in received for n in acked if n not in got)
    result.update(summarize(lags))
    result.update(
        {
            "lag_definition": "append acknowledged (in-process writer) -> the event's SSE "
            "message parsed by a client; every client, every event",
            "append_latency": summarize(tally.latencies_ms),
            "subscribers": LATENCY_SUBSCRIBERS,
            "not_delivered": missing,
            "concurrency": f"open loop, {LATENCY_RATE:.0f} appends/s of 1 event",
            **ctx.settle(),
        }
    )
    return result


def _raise_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the API started after it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def _rss_mb(pid: int) -> float | None:
    status = procfs._status(pid)
    value = status.get("VmRSS")
    return round(float(value.split()[0]) / 1024.0, 1) if value else None


def idle(ctx: Context, name: str) -> dict[str, Any]:
    """N idle subscribers of ``/subscribe/all`` on one API process; one event to all of them."""
    count = IDLE_SUBSCRIBERS[ctx.quick]
    limit = _raise_file_limit()
    if limit < count + 200:
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}: too low for {count} connections")
    api, url = ctx.env.start_api("api-sse-idle", KAFKASTORE_SSE_MAX_SUBSCRIBERS=str(count + 100))
    kind = f"SseIdle{ctx.env.run_id}"
    host, port = _target(url)
    store = ctx.astore()
    try:
        rss_before = _rss_mb(api.pid)

        async def main() -> dict[str, Any]:
            path = f"/subscribe/all?type={kind}&from_position={_head(url) + 1}"
            clients = [SseClient(host, port, path) for _ in range(count)]
            connect_s = await _open_all(ctx, name, clients)
            streams = [c.messages() for c in clients]
            await asyncio.sleep(3.0)  # every feed has caught up and waits at the head
            rss_held = _rss_mb(api.pid)
            deliveries: list[float] = []
            firsts: list[float] = []
            indexed: list[float] = []
            probe = Connection(host, port)
            for n in range(IDLE_ROUNDS):
                # every client waits for its next message before the append
                waits = [asyncio.ensure_future(anext(s)) for s in streams]
                await asyncio.sleep(0.5)
                stream = f"SseIdle-{n}"
                await store.append(stream, [NewEvent(type=kind, data={"n": n})])
                acked = time.perf_counter()

                async def readable(stream: str = stream) -> float:
                    # the index has it: what the feeds wait for (a long poll, one round trip)
                    await probe.request("GET", f"/streams/{stream}?min_version=1&timeout_ms=60000")
                    return time.perf_counter()

                index_probe = asyncio.ensure_future(readable())
                arrived: list[float] = []
                for future in asyncio.as_completed(waits, timeout=DELIVERY_TIMEOUT):
                    _id, data = await future
                    assert orjson.loads(data)["data"]["n"] == n
                    arrived.append(time.perf_counter())
                indexed.append((await index_probe - acked) * 1000.0)
                firsts.append((min(arrived) - acked) * 1000.0)
                deliveries.append((max(arrived) - acked) * 1000.0)
                await asyncio.sleep(1.0)
            await probe.close()
            for client in clients:
                await client.close()
            return {
                "subscribers_held": count,
                "connect_s": round(connect_s, 2),
                "api_rss_mb_before": rss_before,
                "api_rss_mb_with_subscribers": rss_held,
                "indexed_ms": [round(x, 1) for x in indexed],
                "first_delivery_ms": [round(x, 1) for x in firsts],
                "all_delivered_ms": [round(x, 1) for x in deliveries],
                "first_to_last_ms": [
                    round(last - first, 1) for first, last in zip(firsts, deliveries, strict=True)
                ],
                **{f"all_delivered_{k}": v for k, v in summarize(deliveries).items()},
            }

        result = run_loop(main())
    finally:
        ctx.env.stop_service(api)
    result.update(
        {
            "definition": "append acknowledged (in-process writer) -> the last of the idle "
            "subscribers parsed the event's SSE message; indexed_ms: -> a long poll of the "
            "main API answered with it (index lag + one round trip); first_to_last_ms: the "
            "fan-out itself (server and these clients, on the same cores)",
            "file_limit": limit,
            "rounds": IDLE_ROUNDS,
        }
    )
    return result


def _sse_reads(url: str) -> float:
    """The API's ``kafkastore_sse_reads_total`` (index reads of the feeds' readers)."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("kafkastore_sse_reads_total "):
            return float(line.split()[1])
    raise RuntimeError("the API has no kafkastore_sse_reads_total")


def idle_streams(ctx: Context, name: str) -> dict[str, Any]:
    """1 000 idle subscribers of 1 000 streams; one append to one stream (5 times), then one
    append to each of 100 streams at once: delivery times and the readers' reads."""
    count = QUIET_STREAMS
    limit = _raise_file_limit()
    if limit < count + 200:
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}: too low for {count} connections")
    api, url = ctx.env.start_api(
        "api-sse-idle-streams", KAFKASTORE_SSE_MAX_SUBSCRIBERS=str(count + 100)
    )
    kind = f"SseQuiet{ctx.env.run_id}"
    host, port = _target(url)
    store = ctx.astore()
    try:
        rss_before = _rss_mb(api.pid)

        async def main() -> dict[str, Any]:
            ids = [f"{kind}-{i}" for i in range(count)]
            clients = [SseClient(host, port, f"/subscribe/streams/{s}") for s in ids]
            connect_s = await _open_all(ctx, name, clients)
            streams = [c.messages() for c in clients]
            await asyncio.sleep(3.0)  # every feed has caught up and waits at the head
            rss_held = _rss_mb(api.pid)
            single_ms: list[float] = []
            reads_before = _sse_reads(url)
            for n in range(IDLE_ROUNDS):
                i = n * (count // IDLE_ROUNDS)
                wait = asyncio.ensure_future(anext(streams[i]))
                await asyncio.sleep(0.2)
                await store.append(ids[i], [NewEvent(type=kind, data={"n": n})])
                acked = time.perf_counter()
                _id, data = await asyncio.wait_for(wait, DELIVERY_TIMEOUT)
                single_ms.append((time.perf_counter() - acked) * 1000.0)
                assert orjson.loads(data)["data"]["n"] == n
                await asyncio.sleep(1.0)  # any reader it woke has read by now
            single_reads = _sse_reads(url) - reads_before
            # One event to each of 100 streams at once.
            chosen = list(range(1, count, count // WRITTEN_STREAMS))[:WRITTEN_STREAMS]
            waits = [asyncio.ensure_future(anext(streams[i])) for i in chosen]
            await asyncio.sleep(0.2)
            reads_before = _sse_reads(url)
            started = time.perf_counter()
            await asyncio.gather(
                *(store.append(ids[i], [NewEvent(type=kind, data={"n": i})]) for i in chosen)
            )
            acked = time.perf_counter()
            arrived: list[float] = []
            for future in asyncio.as_completed(waits, timeout=DELIVERY_TIMEOUT):
                await future
                arrived.append(time.perf_counter())
            await asyncio.sleep(1.0)
            many_reads = _sse_reads(url) - reads_before
            for client in clients:
                await client.close()
            return {
                "subscribers_held": count,
                "connect_s": round(connect_s, 2),
                "api_rss_mb_before": rss_before,
                "api_rss_mb_with_subscribers": rss_held,
                "one_stream_delivery_ms": [round(x, 1) for x in single_ms],
                **{f"one_stream_delivery_{k}": v for k, v in summarize(single_ms).items()},
                "one_stream_reader_reads": int(single_reads),
                "streams_written_at_once": len(chosen),
                "appends_acked_s": round(acked - started, 3),
                "all_written_delivered_ms": round((max(arrived) - started) * 1000.0, 1),
                "all_written_reader_reads": int(many_reads),
            }

        result = run_loop(main())
    finally:
        ctx.env.stop_service(api)
    result.update(
        {
            "definition": "one_stream_delivery_ms: append acknowledged (in-process writer) -> "
            "the written stream's subscriber parsed the event, one append at a time, "
            f"{IDLE_ROUNDS} streams; one_stream_reader_reads: the API's "
            "kafkastore_sse_reads_total over those appends (one per append when only the "
            f"written stream's reader reads; {count} per append if every reader read at every "
            f"commit); all_written_delivered_ms: {WRITTEN_STREAMS} concurrent appends started "
            "-> all their subscribers had their event",
            "file_limit": limit,
        }
    )
    return result


async def _open_all(ctx: Context, name: str, clients: list[SseClient]) -> float:
    """Open every client, at most CONNECT_CONCURRENCY at a time, with a progress bar; the
    seconds it took."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    done = itertools.count(1)
    opened = time.perf_counter()
    with drive.bar(ctx.progress, f"{name}: connect", len(clients)) as advance:

        async def connect(client: SseClient) -> None:
            async with gate:
                await client.open()
            advance(next(done))

        await asyncio.gather(*(connect(c) for c in clients))
    return time.perf_counter() - opened
