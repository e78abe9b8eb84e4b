"""The sections of ``latest.md`` that issue 14 added: CPU per event, the sustained ramps, idle and
light-load cost, scale-out, growth (``--scale``) and the issue's targets (computed in
:mod:`bench.targets`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench import costs
from bench.fmt import ms, num, table
from bench.targets import LIGHT

Results = Mapping[str, Mapping[str, Any]]
ROLES = ("kafka", "postgresql", "bench", "api", "indexer", "api2", "indexer2")
SUSTAINED = {
    "kafkastore_sustained": "kafkastore",
    "raw_kafka_sustained": "raw Kafka",
    "naive_postgres_sustained": "naive Postgres",
    "eventsourcing_sustained": "eventsourcing",
}


# ----------------------------------------------------------------------------------- markdown


def cpu_per_event(results: Results) -> list[str]:
    rows = []
    for name, r in results.items():
        cost = r.get("cpu_us_per_event")
        if not isinstance(cost, Mapping):
            continue
        rows.append(
            [f"`{name}`", num(r.get("events_per_s"))]
            + [num(cost.get(role), 1) if role in cost else "" for role in ROLES]
            + [f"**{num(cost.get('total'), 1)}**", num(cost.get("other"), 1), _split(cost)]
        )
    if not rows:
        return []
    labels = [costs.ROLE_LABELS[r] for r in ROLES]
    return [
        "## CPU per event (µs of CPU per event in the measured window, by process role)",
        "",
        "`bench process` is the load generator, and the writer of the in-process workloads; "
        "`API` is the writer of the HTTP ones. `outside`: processes not of the benchmark "
        "(never in the total). The last column splits the bench process by thread: main (the "
        "load generator's event loop and the client side of in-process appends) / librdkafka / "
        "the others (the writer's threads; the producer threads of closed-loop workloads).",
        "",
        *table(
            ["workload", "events/s", *labels, "total", "outside", "bench: main / rdkafka / rest"],
            rows,
        ),
        "",
    ]


def _split(cost: Mapping[str, Any]) -> str:
    parts = [cost.get(f"bench.{g}") for g in ("main", "librdkafka", "threads")]
    if all(p is None for p in parts):
        return "-"
    return " / ".join(num(p, 1) for p in parts)


def cpu_ratio_table(doc: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    ratios = doc.get("cpu_ratios") or {}
    if not ratios:
        return []
    keys = [*labels, "flat_out"]
    rows = [
        [f"`{name}`"] + [num(row.get(k), 2) + ("x" * (row.get(k) is not None)) for k in keys]
        for name, row in ratios.items()
    ]
    heads = [f"/ {v}" for v in labels.values()] + ["/ bare producer flat out"]
    return [
        "## Ratios of CPU per event (kafkastore µs/event / the baseline's; < 1: cheaper)",
        "",
        *table(["kafkastore workload", *heads], rows),
        "",
    ]


def sustained(results: Results) -> list[str]:
    out: list[str] = []
    heads = []
    for name, label in SUSTAINED.items():
        r = results.get(name)
        if not r or not r.get("steps"):
            continue
        heads.append(f"{label} **{num(r.get('sustained_events_per_s'))}** events/s")
        rows = []
        for s in r["steps"]:
            rows.append(
                [
                    num(s.get("offered_events_per_s")),
                    num(s.get("acked_events_per_s")),
                    num(s.get("indexed_events_per_s")),
                    ms(s.get("append_p50_ms")),
                    ms(s.get("append_p99_ms")),
                    ms(s.get("append_p999_ms")),
                    ms(s.get("index_lag_p50_ms")),
                    ms(s.get("index_lag_p99_ms")),
                    f"{num(s.get('backlog_start'))} → {num(s.get('backlog_end'))}",
                    num((s.get("cpu_us_per_event") or {}).get("total"), 1),
                    num(s.get("shed_appends")),
                    "yes" if s.get("sustained") else "no",
                ]
            )
        out += [f"### `{name}`", ""]
        out += table(
            [
                "offered ev/s",
                "acked ev/s",
                "indexed ev/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "lag p50 ms",
                "lag p99 ms",
                "backlog start → end",
                "CPU µs/event",
                "shed",
                "sustained",
            ],
            rows,
        )
        out.append("")
    if not out:
        return []
    return [
        "## Sustained ramp (open loop, 10-event appends, rising rate)",
        "",
        "Highest step sustained (acked >= 95% of offered, append p99 < 100 ms, index backlog "
        "not growing): " + "; ".join(heads) + ". Plot: `sustained.png` beside this file.",
        "",
        *out,
    ]


def light(results: Results) -> list[str]:
    rows = []
    for name in LIGHT:
        r = results.get(name)
        if not r:
            continue
        by = (r.get("cpu") or {}).get("cores_by_process", {})
        rows.append(
            [f"`{name}`", num(r.get("events_per_s"))]
            + [num(by.get(role), 3) for role in ("kafka", "postgresql", "api", "indexer")]
            + [
                num(r.get("stack_cores"), 3),
                num(r.get("stack_ms_per_event"), 3),
                ms(r.get("p50_ms")),
                ms(r.get("p99_ms")),
            ]
        )
    if not rows:
        return []
    return [
        "## Idle and light-load cost (cores; the stack = broker + PostgreSQL + API + indexer)",
        "",
        *table(
            [
                "workload",
                "events/s",
                "broker",
                "PostgreSQL",
                "API",
                "indexer",
                "stack cores",
                "stack ms CPU/event",
                "p50 ms",
                "p99 ms",
            ],
            rows,
        ),
        "",
    ]


def scaleout(results: Results) -> list[str]:
    r = results.get("kafkastore_scaleout")
    if not r:
        return []
    rows = []
    for key, label in (
        ("one_process", "1 serve, 1 indexer"),
        ("two_processes", "2 workers, 2 indexers"),
    ):
        phase = r.get(key) or {}
        by = (phase.get("cpu") or {}).get("cores_by_process", {})
        rows.append(
            [
                label,
                num(phase.get("events_per_s")),
                ms(phase.get("p99_ms")),
                num(phase.get("index_backlog_at_end")),
                num(phase.get("index_settle_s"), 1),
                ", ".join(f"{k} {v:.2f}" for k, v in by.items() if v),
                num(phase.get("indexed_exactly")),
            ]
        )
    return [
        "## Scale-out (HTTP, 64 connections, 10-event appends)",
        "",
        f"Two processes of each / one: **{num(r.get('gain'), 2)}x**. {scaleout_why(r)}",
        "",
        *table(
            ["processes", "events/s", "p99 ms", "backlog at end", "settle s", "cores", "exact"],
            rows,
        ),
        "",
    ]


def scaleout_why(r: Mapping[str, Any]) -> str:
    """Why the second writer and indexer added what they added, from the phases' CPU."""
    phases = [r.get("one_process") or {}, r.get("two_processes") or {}]
    cpus = [p.get("cpu") or {} for p in phases]
    machine = cpus[1].get("cores")
    stacks = [costs.stack_cores(c) for c in cpus]
    outside = [(c.get("cores_by_process") or {}).get("other") for c in cpus]
    if not isinstance(machine, int) or None in stacks:
        return ""
    used = ", ".join(
        f"{label} {num(s, 2)} cores (+{num(o, 2)} outside)"
        for label, s, o in zip(("one", "two"), stacks, outside, strict=True)
    )
    busy = [float(s or 0.0) + float(o or 0.0) for s, o in zip(stacks, outside, strict=True)]
    if max(busy) >= 0.9 * machine:
        why = (
            f"The {machine} cores were busy in both phases: the second writer and indexer "
            "can only share the same CPU with the broker, PostgreSQL and the load generator, "
            "so they add little or nothing here; they add throughput where cores are free "
            "(each kafkastore process is one Python process, at most one core)."
        )
    else:
        why = (
            "Cores were left idle: the bound is latency (round trips per append), not CPU; "
            "more processes add concurrency and so throughput."
        )
    return f"CPU of the benchmark's processes per phase: {used}. {why}"


def growth(results: Results) -> list[str]:
    r = results.get("kafkastore_scale")
    if not r or not r.get("points"):
        return []
    rows = []
    for p in r["points"]:
        disk = p.get("disk") or {}
        rows.append(
            [
                num(p.get("indexed_events")),
                num(p.get("append_events_per_s")),
                _pair(p.get("stream_read")),
                _pair(p.get("category_page")),
                _pair(p.get("all_page")),
                num(disk.get("bytes_per_event")),
                ", ".join(
                    f"{k} {v:,.0f}" for k, v in (disk.get("bytes_per_event_by_table") or {}).items()
                ),
            ]
        )
    ratios = r.get("growth_last_over_first") or {}
    grew = [f"{k} {v:.2f}x" for k, v in ratios.items() if isinstance(v, (int, float))]
    return [
        "## Growth (`--scale`)",
        "",
        *table(
            [
                "indexed events",
                "appends ev/s",
                "stream read p50/p99 ms",
                "category page p50/p99 ms",
                "$all page p50/p99 ms",
                "bytes/event",
                "bytes/event by table",
            ],
            rows,
        ),
        "",
        "Last point / first: " + (", ".join(grew) or "-") + " (> 1: grows with the store).",
        "",
    ]


def _pair(summary: Any) -> str:
    if not isinstance(summary, Mapping):
        return "-"
    return f"{ms(summary.get('p50_ms'))} / {ms(summary.get('p99_ms'))}"


_VERDICTS = {True: "met", False: "**missed**", None: "not run"}


def verdict(t: Mapping[str, Any]) -> str:
    """A target row of ``bench.targets.targets`` in a word: met, missed, not run, reference."""
    if t.get("reference"):
        return "reference" if t["measured"] is not None else "not run"
    return _VERDICTS[t["met"]]


def targets_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    body = [
        [
            t["target"],
            num(t["measured"], 3),
            num(t["threshold"], 1),
            num(t["ratio"], 2),
            verdict(t),
        ]
        for t in rows
    ]
    return [
        "## Targets of issue 14 (ratio = measured / threshold)",
        "",
        *table(["target", "measured", "threshold", "ratio", ""], body),
        "",
    ]


def main_row_extra(r: Mapping[str, Any]) -> str:
    cost = r.get("cpu_us_per_event")
    return num(cost.get("total"), 1) if isinstance(cost, Mapping) else "-"
