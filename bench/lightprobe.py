"""Idle and light-load cost of the whole stack, and one-event append latency (a profiling aid).

``python -m bench.lightprobe --kafka HOST:PORT --database-url postgresql://...`` makes a database
and a topic of its own on the given services (as ``kafkastore bench`` does), starts
``kafkastore serve`` and ``kafkastore indexer`` on them, then measures:

- **idle**: the CPU of every role (broker, PostgreSQL with its backends, API, indexer) over a
  window with nothing to do;
- for each ``--rates`` rate: one-event ``POST /streams/{id}`` at that fixed rate (open loop,
  latency from the scheduled start), the CPU of every role over the window and in ms per event,
  then a shorter window where a sample of the appends is followed by a long-polling
  ``GET /streams/{id}?min_version=`` (index lag: acknowledged -> readable, one HTTP round trip
  included). The lag window is kept apart so that its reads do not count in the CPU figures.

CPU is read from ``/proc/<pid>/stat`` (:mod:`bench.procfs`): CPU seconds of each process over the
window, so other work on the machine changes the figures less than wall-clock ones.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
from confluent_kafka import TopicPartition

from bench import environment
from bench.httpclient import Connection
from bench.payload import EVENT_TYPE, event_data, stream_ids
from bench.procfs import CpuWindow
from bench.stats import summarize
from kafkastore import kafka, pg
from kafkastore.config import Settings

STREAMS = 1000
CONNECTIONS = 32
LAG_PROBES_PER_S = 20.0


def _roles(env: environment.Environment) -> dict[str, int]:
    assert env.api is not None and env.indexer is not None
    return {
        "broker": env.kafka_pid or 0,
        "postgresql": env.postgres_pid or 0,
        "api": env.api.pid,
        "indexer": env.indexer.pid,
        "loadgen": os.getpid(),
    }


class Counters:
    """Work the stack did over a window, counted where it lands: PostgreSQL transactions of
    the run's database (``pg_stat_database``) and offset-commit records written to Kafka
    (the high watermarks of ``__consumer_offsets``). Independent of the machine's load."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer = kafka.consumer(settings, f"lightprobe-{uuid.uuid4().hex[:8]}")
        metadata = self._consumer.list_topics("__consumer_offsets", timeout=10.0)
        self._partitions = sorted(metadata.topics["__consumer_offsets"].partitions)

    def read(self) -> dict[str, int]:
        with pg.connect(self.settings.database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
        commits = 0
        for p in self._partitions:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition("__consumer_offsets", p), timeout=10.0, cached=False
            )
            commits += max(int(high), 0)
        # pg_stat_database counts this read's own transaction too: 1 per read.
        return {"pg_transactions": int(row[0]) if row else 0, "offset_commit_records": commits}

    def close(self) -> None:
        self._consumer.close()


def _delta(before: dict[str, int], after: dict[str, int], events: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: after[k] - before[k] for k in before}
    out["pg_transactions"] -= 1
    if events:
        out.update({f"{k}_per_event": round(v / events, 3) for k, v in list(out.items())})
    return out


def _cpu(window: dict[str, Any], events: int, seconds: float) -> dict[str, Any]:
    cores: dict[str, float] = dict(window["cores_by_process"])
    stack = sum(v for k, v in cores.items() if k not in ("loadgen", "other"))
    out: dict[str, Any] = {"cores": cores, "stack_cores": round(stack, 3)}
    if events:
        per = {k: round(v * seconds * 1000.0 / events, 3) for k, v in cores.items()}
        out["ms_per_event"] = per
        out["stack_ms_per_event"] = round(stack * seconds * 1000.0 / events, 3)
    return out


async def _load(
    api_url: str,
    roles: dict[str, int],
    rate: float,
    seconds: float,
    *,
    lag: bool,
    counters: Counters | None = None,
    warmup: float = 2.0,
) -> dict[str, Any]:
    url = urlsplit(api_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(Connection(host, port))
    streams = stream_ids("probe", STREAMS)
    seq = itertools.count()
    latencies: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    every = max(1, round(rate / LAG_PROBES_PER_S))
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.05
    measure_from = start + warmup
    end = measure_from + seconds
    tasks: set[asyncio.Task[None]] = set()
    counted = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal counted
        stream = streams[i % STREAMS]
        body = orjson.dumps({"events": [{"type": EVENT_TYPE, "data": event_data(next(seq))}]})
        conn = await pool.get()
        try:
            resp = await conn.request("POST", f"/streams/{stream}", body)
        finally:
            pool.put_nowait(conn)
        t_ack = time.perf_counter()
        if resp.status not in (200, 201):
            errors.append(f"HTTP {resp.status}: {resp.body[:120]!r}")
            return
        if scheduled >= measure_from:
            latencies.append((t_ack - scheduled) * 1000.0)
            counted += 1
        if lag and i % every == 0 and scheduled >= measure_from:
            version = orjson.loads(resp.body)["to_version"]
            conn = await pool.get()
            try:
                read = await conn.request(
                    "GET",
                    f"/streams/{stream}?from_version={version}&limit=1"
                    f"&min_version={version}&timeout_ms=10000",
                )
            finally:
                pool.put_nowait(conn)
            if read.status == 200 and read.headers.get("x-index-behind") != "true":
                lags.append((time.perf_counter() - t_ack) * 1000.0)
            else:
                errors.append(f"lag probe: HTTP {read.status}")

    result: dict[str, Any] = {}

    async def watch(roles: dict[str, int]) -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        before = await asyncio.to_thread(counters.read) if counters else {}
        window = CpuWindow(roles=roles)
        window.start()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        result["cpu_window"] = window.stop()
        if counters:
            result["counts"] = (before, await asyncio.to_thread(counters.read))

    watcher = asyncio.create_task(watch(roles))
    i = 0
    while True:
        scheduled = start + i / rate
        if scheduled >= end:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await watcher
    if tasks:
        await asyncio.wait(tasks, timeout=30.0)
    while not pool.empty():
        await pool.get_nowait().close()
    result.update(
        {
            "rate": rate,
            "seconds": seconds,
            "appends": counted,
            "errors": len(errors),
            "first_errors": errors[:3],
            "latency_ms": summarize(latencies),
        }
    )
    if lag:
        result["lag_ms"] = summarize(lags)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lightprobe", description=__doc__)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--database-url", required=True, help="the server's URL (any database)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle window")
    parser.add_argument("--rates", default="100,500", help="one-event appends/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per rate")
    parser.add_argument("--lag-seconds", type=float, default=8.0, help="0 = no lag window")
    parser.add_argument("--output", help="write the results as JSON here too")
    parser.add_argument("--label", default="", help="a name for this run in the output")
    args = parser.parse_args(argv)
    settings = Settings(kafka=args.kafka, database_url=args.database_url)
    run_id = environment.new_run_id()
    env = environment.prepare(settings, run_id, services_given=True)
    out: dict[str, Any] = {"label": args.label, "run_id": run_id}
    try:
        roles = _roles(env)
        counters = Counters(env.settings)
        time.sleep(5.0)  # the indexer joins its group, the API warms up
        before = counters.read()
        window = CpuWindow(roles=roles)
        window.start()
        time.sleep(args.idle)
        out["idle"] = _cpu(window.stop(), 0, args.idle)
        out["idle"]["work"] = _delta(before, counters.read(), 0)
        print(f"idle: {json.dumps(out['idle'])}", flush=True)
        for rate in [float(r) for r in args.rates.split(",") if r]:
            res = asyncio.run(
                _load(env.api_url, roles, rate, args.seconds, lag=False, counters=counters)
            )
            res["cpu"] = _cpu(res.pop("cpu_window"), res["appends"], args.seconds)
            before, after = res.pop("counts")
            res["work"] = _delta(before, after, res["appends"])
            if args.lag_seconds > 0:
                lag = asyncio.run(_load(env.api_url, roles, rate, args.lag_seconds, lag=True))
                res["lag_ms"] = lag["lag_ms"]
                res["lag_errors"] = lag["errors"]
            out[f"rate_{int(rate)}"] = res
            print(f"rate {rate:.0f}/s: {json.dumps(res)}", flush=True)
        counters.close()
    finally:
        env.close()
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(out, fh, indent=2)
    _print_table(out)
    return 0


def _print_table(out: dict[str, Any]) -> None:
    roles = ["broker", "postgresql", "api", "indexer", "loadgen", "other"]
    print(f"\n{out.get('label') or out['run_id']}")
    print(
        "| window | "
        + " | ".join(roles)
        + " | stack | stack ms/event | p50 | p99 | lag p50 | lag p99 | pg xacts/ev | commits |"
    )
    print("|---" * (len(roles) + 9) + "|")
    for key, res in out.items():
        if key == "idle":
            cpu, lat, lag, work = res, {}, {}, res.get("work", {})
        elif key.startswith("rate_"):
            cpu, lat, lag = res["cpu"], res["latency_ms"], res.get("lag_ms", {})
            work = res.get("work", {})
        else:
            continue
        cores = cpu["cores"]
        cells = [f"{100 * cores.get(r, 0.0):.1f}%" for r in roles]
        print(
            f"| {key} | "
            + " | ".join(cells)
            + f" | {100 * cpu['stack_cores']:.1f}% | {cpu.get('stack_ms_per_event', '-')} | "
            + f"{lat.get('p50_ms', '-')} | {lat.get('p99_ms', '-')} | "
            + f"{lag.get('p50_ms', '-')} | {lag.get('p99_ms', '-')} | "
            + f"{work.get('pg_transactions_per_event', work.get('pg_transactions', '-'))} | "
            + f"{work.get('offset_commit_records', '-')} |"
        )


if __name__ == "__main__":
    sys.exit(main())
