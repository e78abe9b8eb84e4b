"""Scale-out, shown: the HTTP pipelined workload against one ``kafkastore serve`` and one indexer,
then against ``serve --workers 2`` with a second indexer in the same group (the partitions split
between the two), on the same topic and database.

What the second processes add depends on where the CPU goes: each writer and each indexer is one
Python process (one core at most), so they help when one of them is the bound and cores are free;
on a machine whose cores are already busy with the broker, PostgreSQL and the load generator they
add little, and the result's ``cpu`` of each phase shows which. Correctness with two writers and
two indexers on one topic is a test (``tests/indexer/test_faults.py``); here the phase checks that
the index holds exactly the events it acknowledged.
"""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.workloads import appends
from kafkastore import pg

CONNECTIONS = 64


def scaleout(ctx: Context, name: str) -> dict[str, Any]:
    one = appends.http(ctx, f"{name} (1 API, 1 indexer)", connections=CONNECTIONS, prefix="so1")
    one["indexed_exactly"] = _indexed(ctx, "so1", one)
    api2, url = ctx.env.start_api("api-workers2", workers=2)
    second = ctx.env.start_indexer(ctx.settings, "indexer2", group=ctx.settings.indexer_group)
    try:
        probe = ctx.probe(
            "api2", "indexer", "indexer2", "bench", api2=api2.pid, indexer2=second.pid
        )
        two = appends.http(
            ctx,
            f"{name} (2 workers, 2 indexers)",
            connections=CONNECTIONS,
            prefix="so2",
            api_url=url,
            probe=probe,
        )
        two["indexed_exactly"] = _indexed(ctx, "so2", two)
    finally:
        ctx.env.stop_service(second)
        ctx.env.stop_service(api2)
    gain = None
    if one["events_per_s"] and two["events_per_s"]:
        gain = round(two["events_per_s"] / one["events_per_s"], 3)
    return {
        "events_per_s": two["events_per_s"],
        "p50_ms": two.get("p50_ms"),
        "p99_ms": two.get("p99_ms"),
        "p999_ms": two.get("p999_ms"),
        "concurrency": f"{CONNECTIONS} HTTP connections; serve --workers 2 + 2 indexers",
        "cpu": two.get("cpu"),
        "peak_rss_mb": two.get("peak_rss_mb"),
        "one_process": one,
        "two_processes": two,
        "gain": gain,
        "errors": one.get("errors", 0) + two.get("errors", 0),
    }


def _indexed(ctx: Context, category: str, result: dict[str, Any]) -> bool:
    """Whether the index holds as many events of the phase's category as were acknowledged
    (after the settle that ended the phase), i.e. nothing lost or doubled."""
    with pg.connect(ctx.settings.database_url, autocommit=True) as conn, pg.translated():
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (stream_id, version)) FROM events WHERE category = %s",
            (category,),
        ).fetchone()
    count, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
    result["indexed_events"] = count
    return count == distinct and count >= int(result.get("acknowledged_events", count))
