"""The results document (JSON) and its markdown rendering (``bench/results/latest.md``).

JSON shape (issue 6)::

    {"machine": {...}, "run": {...},
     "results": {"<workload>": {"events_per_s": ..., "p50_ms": ..., "p99_ms": ...,
                                "peak_rss_mb": {"<process>": ...}, "cpu": {...}, ...}},
     "ratios": {...}, "targets": [...]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench import costs, sections
from bench import targets as issue14
from bench.fmt import ms as _ms
from bench.fmt import num as _num
from bench.fmt import rss as _rss
from bench.fmt import table as _table

# (kafkastore workload, its baselines of the same shape): the ratios of the markdown table.
# Closed-loop against closed-loop, pipelined against pipelined (see bench/README.md).
RATIO_PAIRS: dict[str, dict[str, str]] = {
    "kafkastore_append_inproc": {
        "raw_kafka": "raw_kafka_produce",
        "naive": "naive_postgres_store",
        "naive_batched": "naive_postgres_store_batched",
        "eventsourcing": "eventsourcing_postgres",
    },
    "kafkastore_append_inproc_single": {
        "raw_kafka": "raw_kafka_produce_single",
        "naive": "naive_postgres_store_single",
        "eventsourcing": "eventsourcing_postgres_single",
    },
    "kafkastore_append_inproc_pipelined": {
        "raw_kafka": "raw_kafka_produce_pipelined",
        "naive": "naive_postgres_store",
        "naive_batched": "naive_postgres_store_batched",
        "eventsourcing": "eventsourcing_postgres",
    },
    "kafkastore_append_http": {
        "raw_kafka": "raw_kafka_produce",
        "naive": "naive_postgres_store",
        "naive_batched": "naive_postgres_store_batched",
        "eventsourcing": "eventsourcing_postgres",
    },
    "kafkastore_append_http_pipelined": {
        "raw_kafka": "raw_kafka_produce_pipelined",
        "naive": "naive_postgres_store",
        "naive_batched": "naive_postgres_store_batched",
        "eventsourcing": "eventsourcing_postgres",
    },
    # Open loop against open loop: the highest sustained step of each ramp.
    "kafkastore_sustained": {
        "raw_kafka": "raw_kafka_sustained",
        "naive": "naive_postgres_sustained",
        "eventsourcing": "eventsourcing_sustained",
    },
}
BASELINE_LABELS = {
    "raw_kafka": "raw Kafka",
    "naive": "naive Postgres",
    "naive_batched": "naive Postgres, batched INSERTs",
    "eventsourcing": "eventsourcing",
}


def _rate(results: Mapping[str, Mapping[str, Any]], name: str) -> float | None:
    value = results.get(name, {}).get("events_per_s")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def ratios(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """events/s of each kafkastore workload divided by its baselines' (None when one is missing)."""
    out: dict[str, dict[str, float | None]] = {}
    for ours, baselines in RATIO_PAIRS.items():
        mine = _rate(results, ours)
        if mine is None:
            continue
        row: dict[str, float | None] = {}
        for key, theirs in baselines.items():
            other = _rate(results, theirs)
            row[key] = None if other is None else round(mine / other, 3)
        out[ours] = row
    return out


def targets(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The floor of issue 6, each with its measured value and whether it is met."""
    ratio = ratios(results).get("kafkastore_append_inproc", {})
    inproc = _rate(results, "kafkastore_append_inproc")
    catchup = _rate(results, "kafkastore_indexer_catchup")
    lag_p99 = results.get("kafkastore_index_lag", {}).get("p99_ms")

    def row(name: str, value: float | None, floor: float, above: bool = True) -> dict[str, Any]:
        met = None if value is None else (value >= floor if above else value < floor)
        return {"target": name, "measured": value, "threshold": floor, "met": met}

    return [
        row("kafkastore_append_inproc / naive_postgres_store >= 5", ratio.get("naive"), 5.0),
        row("kafkastore_append_inproc / raw_kafka_produce >= 0.15", ratio.get("raw_kafka"), 0.15),
        row(
            "kafkastore_indexer_catchup / kafkastore_append_inproc >= 0.8",
            None if catchup is None or inproc is None else round(catchup / inproc, 3),
            0.8,
        ),
        row(
            "kafkastore_index_lag p99 < 1000 ms",
            None if lag_p99 is None else float(lag_p99),
            1000.0,
            above=False,
        ),
    ]


def document(
    machine: Mapping[str, Any], run: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    copied = {k: dict(v) for k, v in results.items()}
    costs.annotate(copied)
    return {
        "machine": dict(machine),
        "run": dict(run),
        "results": copied,
        "ratios": ratios(copied),
        "cpu_ratios": issue14.cpu_ratios(copied, RATIO_PAIRS),
        "targets": targets(copied),
        "targets_issue_14": issue14.targets(copied),
    }


# ----------------------------------------------------------------------------------- markdown


def markdown(doc: Mapping[str, Any]) -> str:
    machine = doc.get("machine", {})
    run = doc.get("run", {})
    results: Mapping[str, Mapping[str, Any]] = doc.get("results", {})
    out = [
        "# kafkastore benchmarks",
        "",
        f"Run `{run.get('started_at', '?')}` ({run.get('mode', '?')} mode, "
        f"{run.get('measure_s', '?')} s per workload after {run.get('warmup_s', '?')} s of "
        f"warm-up) on {machine.get('cores', '?')} cores ({machine.get('cpu_model', '?')}), "
        f"{_num(machine.get('memory_mb'))} MB; Kafka {machine.get('kafka_version', '?')}, "
        f"PostgreSQL {machine.get('postgresql_version', '?')}, "
        f"Python {machine.get('python_version', '?')}. "
        "Broker, database, services and benchmark clients share these cores.",
        "",
    ]
    warmed = run.get("stack_warm_up")
    if warmed:
        jit = warmed.get("broker_jit_cores")
        out += [
            f"Before the first workload the stack was warmed up for {warmed.get('seconds')} s "
            "(pipelined appends, then one-event HTTP appends until the broker's JIT compiler "
            f"threads were quiet: {'-' if jit is None else f'{jit:.3f}'} cores in the last "
            "window), as a broker that has run for a while is.",
            "",
        ]
    if run.get("notes"):
        out += [f"> {note}" for note in run["notes"]] + [""]
    rows = []
    for name, r in results.items():
        rows.append(
            [
                f"`{name}`",
                _num(r.get("events_per_s")),
                _ms(r.get("p50_ms")),
                _ms(r.get("p99_ms")),
                _ms(r.get("p999_ms")),
                str(r.get("concurrency", "-")),
                _rss(r.get("peak_rss_mb")),
                _num((r.get("cpu") or {}).get("busy_pct")),
                sections.main_row_extra(r),
            ]
        )
    header = ["workload", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "concurrency"]
    out += _table([*header, "peak RSS MB", "CPU busy %", "CPU µs/event"], rows)
    out.append("")
    ratio_rows = []
    for name, row in doc.get("ratios", {}).items():
        ratio_rows.append(
            [f"`{name}`", _num(results.get(name, {}).get("events_per_s"))]
            + [_num(row.get(k), 2) + ("x" * (row.get(k) is not None)) for k in BASELINE_LABELS]
        )
    if ratio_rows:
        out += [
            "## Ratios (events/s of kafkastore / events/s of the baseline of the same shape)",
            "",
        ]
        labels = [f"/ {v}" for v in BASELINE_LABELS.values()]
        out += _table(["kafkastore workload", "events/s", *labels], ratio_rows)
        out.append("")
    out += sections.cpu_ratio_table(doc, BASELINE_LABELS)
    out += sections.targets_table(doc.get("targets_issue_14", []))
    out += sections.cpu_per_event(results)
    out += sections.sustained(results)
    out += sections.light(results)
    out += sections.scaleout(results)
    out += sections.growth(results)
    verdicts = {True: "met", False: "**missed**", None: "not run"}
    target_rows = [
        [t["target"], _num(t["measured"], 3), verdicts[t["met"]]] for t in doc.get("targets", [])
    ]
    if target_rows:
        out += [
            "## Targets of issue 6 (closed loop; withdrawn by issue 14)",
            "",
            *_table(["target", "measured", ""], target_rows),
            "",
        ]
    cpu_rows = []
    roles: list[str] = []
    for r in results.values():
        for role in (r.get("cpu") or {}).get("cores_by_process", {}):
            if role not in roles:
                roles.append(role)
    for name, r in results.items():
        cpu = r.get("cpu") or {}
        if not cpu:
            continue
        by = cpu.get("cores_by_process", {})
        cpu_rows.append(
            [f"`{name}`", _num(cpu.get("busy_pct")), _num(cpu.get("iowait_pct"))]
            + [_num(by.get(role), 2) for role in roles]
        )
    if cpu_rows:
        out += [
            "## Where the CPU went (cores used during the measured window; 2.0 = both cores)",
            "",
        ]
        out += _table(["workload", "busy %", "iowait %", *roles], cpu_rows)
        out.append("")
    notes = [(name, r["notes"]) for name, r in results.items() if r.get("notes")]
    if notes:
        out += ["## Workload notes", ""]
        out += [f"- `{name}`: {text}" for name, text in notes]
        out.append("")
    return "\n".join(out)
