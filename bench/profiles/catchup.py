"""The indexer's cost per event draining one backlog, run again and again on the same data.

``python -m bench.profiles.catchup --kafka HOST:PORT --database-url URL fill --events N`` writes
a backlog of N events (10-event appends over 1 000 streams, through the real writer) into a
database and a topic of its own (``perfcatch``); ``... run [--code DIR]`` empties the index
tables, starts ``kafkastore indexer`` (the code of checkout ``DIR``, default this one, with its
``.venv``) on a new group and reports, once the whole backlog is indexed: events/s (first
indexed batch to the last) and CPU seconds of the indexer and of PostgreSQL (postmaster and
backends) per event, read from ``/proc``. Running two checkouts in turn on one backlog compares
their code on the same data, with the machine's other load affecting both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from psycopg import sql

from bench import procfs
from bench.environment import with_database
from bench.payload import EVENT_TYPE, OwnedStreams, event_data, expected, split, stream_ids
from dev.process import child_environment
from kafkastore import pg, schema, topic
from kafkastore.client import AsyncEventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent

NAME = "perfcatch"
RESET = """
TRUNCATE events, phantoms, index_checkpoints, scavenged;
UPDATE index_head SET last_position = 0;
"""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        kafka=args.kafka, database_url=with_database(args.database_url, NAME), topic=NAME
    )


def fill(args: argparse.Namespace) -> None:
    with pg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NAME)))
    settings = _settings(args)
    schema.migrate(settings.database_url)
    topic.ensure_topic(settings)
    appends = args.events // 10
    owners = split(stream_ids("catchup", 1000), 64)
    counter = itertools.count()
    seq = itertools.count()

    async def main() -> None:
        store = AsyncEventStore(settings)
        await store.open()

        async def worker(owned: OwnedStreams) -> None:
            while next(counter) < appends:
                stream, version = owned.take()
                new = None
                try:
                    events = [
                        NewEvent(type=EVENT_TYPE, data=event_data(next(seq))) for _ in range(10)
                    ]
                    new = (await store.append(stream, events, expected(version))).to_version
                finally:
                    owned.done(stream, new)

        try:
            await asyncio.gather(*(worker(o) for o in owners))
        finally:
            await store.close()

    started = time.perf_counter()
    asyncio.run(main())
    print(f"wrote {appends * 10:,} events in {time.perf_counter() - started:.1f}s")


def _pg_ticks(postmaster: int) -> int:
    return sum(t for pid, (ppid, t) in procfs.all_processes().items() if postmaster in (pid, ppid))


def _ticks(pid: int) -> int:
    return procfs.all_processes().get(pid, (0, 0))[1]


def run(args: argparse.Namespace) -> None:
    settings = _settings(args)
    with pg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(RESET)
        row = conn.execute("SELECT count(*) FROM appends").fetchone()
        # Every append of the fill is 10 events; the topic holds nothing else.
        backlog = int(row[0]) * 10 if row else 0
    postmaster = procfs.listening_pid(urlsplit(args.database_url).port or 5432) or 0
    code = Path(args.code).resolve()
    env = child_environment(
        {
            "KAFKASTORE_KAFKA": settings.kafka,
            "KAFKASTORE_DATABASE_URL": settings.database_url,
            "KAFKASTORE_TOPIC": settings.topic,
            "KAFKASTORE_INDEXER_GROUP": f"{NAME}-{uuid.uuid4().hex[:8]}",
            "KAFKASTORE_SCAVENGE_INTERVAL": "0",
        }
    )
    pg0 = _pg_ticks(postmaster)
    proc = subprocess.Popen(
        [str(code / ".venv/bin/python"), "-m", "kafkastore.cli", "indexer"],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t_first = None
    first_done = 0
    done = 0
    deadline = time.monotonic() + 900
    try:
        with pg.connect(settings.database_url, autocommit=True) as conn:
            while done < backlog and time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT coalesce(sum(next_offset), 0) FROM index_checkpoints"
                ).fetchone()
                done = int(row[0]) if row else 0
                if done and t_first is None:
                    t_first, first_done = time.perf_counter(), done
                time.sleep(0.05)
        t_done = time.perf_counter()
        indexer_ticks = _ticks(proc.pid)
        pg_ticks = _pg_ticks(postmaster) - pg0
    finally:
        proc.terminate()
        proc.wait(30)
    rate = (done - first_done) / (t_done - t_first) if t_first and t_done > t_first else 0.0
    per = 1e6 / procfs.CLK_TCK / max(done, 1)
    print(
        f"{code.name}: {done:,}/{backlog:,} events, {rate:,.0f} events/s; CPU per event: indexer "
        f"{indexer_ticks * per:.1f} µs (incl. start-up), PostgreSQL {pg_ticks * per:.1f} µs"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles.catchup", description=__doc__)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--database-url", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fill")
    p.add_argument("--events", type=int, default=100_000)
    p = sub.add_parser("run")
    p.add_argument("--code", default=".", help="the checkout whose indexer runs")
    args = parser.parse_args(argv)
    fill(args) if args.command == "fill" else run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
