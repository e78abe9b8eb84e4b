"""The eventsourcing library (PyPI) with its PostgreSQL application recorder, on the workload's
shape: 1 000 aggregates owned by 8 threads, each save carrying 1 or 10 new events.

Imported only when the workload runs (eventsourcing comes with the ``dev`` extra).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import eventsourcing
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench import drive
from bench.context import PRODUCERS, STREAMS, Context
from bench.payload import event_data


class OrderStream(Aggregate):
    """One stream of the workload."""

    @event("LineAdded")
    def add_line(self, seq: int, line: dict[str, Any]) -> None:
        """The event carries the workload's ~200-byte data; the state does not change."""


class BenchApp(Application[Any]):
    """An application with nothing of its own: the library's save path is what is measured."""


def new_app(ctx: Context) -> BenchApp:
    """The application on the run's database (its tables are made on first use)."""
    url = urlsplit(ctx.settings.database_url)
    return BenchApp(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/"),
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": str(PRODUCERS),
            "POSTGRES_MAX_OVERFLOW": "2",
            "CREATE_TABLE": "yes",
        }
    )


def create_aggregates(ctx: Context, app: BenchApp, name: str, count: int) -> list[OrderStream]:
    """``count`` aggregates, saved before the clock starts (a 1-event save each)."""
    aggregates = [OrderStream() for _ in range(count)]
    with drive.bar(ctx.progress, f"{name} (create aggregates)", count) as update:
        for i, agg in enumerate(aggregates):
            app.save(agg)
            if i % 50 == 0:
                update(i)
    return aggregates


def eventsourcing_postgres(ctx: Context, name: str, *, per_append: int) -> dict[str, Any]:
    app = new_app(ctx)
    seq = itertools.count()
    aggregates = create_aggregates(ctx, app, name, STREAMS)
    owned = [aggregates[i::PRODUCERS] for i in range(PRODUCERS)]

    def make(mine: list[Any]) -> Callable[[], int]:
        cycle = itertools.cycle(mine)

        def op() -> int:
            agg = next(cycle)
            for _ in range(per_append):
                agg.add_line(next(seq), event_data(0))
            app.save(agg)
            return per_append

        return op

    try:
        tally, extra = drive.run_threads(
            ctx.progress, name, [make(m) for m in owned], ctx.timing, ctx.probe("bench")
        )
    finally:
        app.close()
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
            "client": f"eventsourcing {getattr(eventsourcing, '__version__', '?')} Application "
            "with the PostgreSQL application recorder, 8 threads, pool of 8 connections",
        },
    )
