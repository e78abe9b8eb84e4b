"""The report of a verification run: JSON (every figure) and markdown (the table the README
links), written side by side as ``<name>.json`` and ``<name>.md``."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafkastore.config import Settings
from verify.checker import KINDS, PhaseReport
from verify.schedule import Result

MAX_VIOLATIONS = 100


def as_json(result: Result, *, kind: str, settings: Settings) -> dict[str, Any]:
    verdict = result.verdict
    return {
        "kind": kind,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": result.seed,
        "seconds": round(result.seconds, 1),
        "ok": verdict.ok,
        "violations_by_kind": {k: verdict.kinds().get(k, 0) for k in KINDS},
        "violations": [asdict(v) for v in verdict.violations[:MAX_VIOLATIONS]],
        "counts": verdict.counts,
        "faults": [p.as_json() for p in verdict.phases],
        "topology": {
            "kafka_nodes": 3,
            "replication_factor": settings.replication_factor,
            "min_insync_replicas": min(2, settings.replication_factor),
            "partitions": settings.partitions,
            "postgres": "one primary of the run's own",
            "delivery_timeout_s": settings.delivery_timeout,
            "consumer_settings": "defaults (session.timeout.ms 45 s, static membership)",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "history": str(result.history_path) if result.history_path else None,
    }


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _settled(p: PhaseReport) -> str:
    if not p.unknown:
        return "0"
    parts = ", ".join(f"{k} {v}" for k, v in sorted(p.settled.items()))
    return f"{p.unknown} ({parts})"


def as_markdown(report: dict[str, Any]) -> str:
    verdict = "**passed**: no violation" if report["ok"] else "**FAILED**"
    lines = [
        f"# kafkastore verify: the {report['kind']} schedule",
        "",
        f"Finished {report['finished_at']} after {report['seconds']} s (seed {report['seed']});"
        f" verdict {verdict}.",
        "",
        "Topology: three KRaft nodes (RF=3, `min.insync.replicas=2`), PostgreSQL, the indexer,"
        " the HTTP API and an exactly-once projection as processes with default settings;"
        f" {report['machine']['cpus']} CPUs. What each column means: docs/verify.md.",
        "",
        "| fault | appends | acknowledged | lost | lost by setting | phantoms | duplicates |"
        " unknown (settled) | writes recovered s | longest write gap s | reads recovered s |"
        " notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for f in report["faults"]:
        p = PhaseReport(**f)
        notes = ", ".join(f"{k} {_cell(v)}" for k, v in p.notes.items())
        lines.append(
            f"| {p.name} | {p.appends} | {p.acknowledged} | {p.lost} | {p.lost_by_setting} |"
            f" {p.phantoms} | {p.duplicates} | {_settled(p)} | {_cell(p.writes_recovered_s)} |"
            f" {_cell(p.max_write_gap_s)} | {_cell(p.reads_recovered_s)} | {notes} |"
        )
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()) + "."]
    by_kind = {k: n for k, n in report["violations_by_kind"].items() if n}
    lines += [
        "",
        "Violations by kind: "
        + (", ".join(f"{k} {n}" for k, n in by_kind.items()) if by_kind else "none")
        + ".",
    ]
    for v in report["violations"][:20]:
        lines.append(f"- {v['kind']}: {v['detail']}")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(as_markdown(report), encoding="utf-8")
    return json_path, md_path
