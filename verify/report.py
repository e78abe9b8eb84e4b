"""The report of a verification run: JSON (every figure) and markdown (the tables the README
links), written side by side as ``<name>.json`` and ``<name>.md``.

:func:`as_json` is one schedule's report (a *part*: the process faults, or the network faults
and the failover on the proxied topology); :func:`combine` makes the run's report of its parts
(the verdict and the totals of all of them, each part kept whole under ``parts``).
:func:`as_markdown` renders either."""

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
from verify.verdict import BETWEEN

MAX_VIOLATIONS = 100


def as_json(
    result: Result, *, kind: str, settings: Settings, proxied: bool = False
) -> dict[str, Any]:
    """One schedule's report; ``proxied``: it ran on :mod:`verify.network`'s topology."""
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
            "postgres": (
                "a primary and its synchronous standby (synchronous_commit=on), reached"
                " through a multi-host URL (target_session_attrs=read-write)"
                if proxied
                else "one primary of the run's own"
            ),
            "network": (
                "toxiproxy on every client-server link, one proxy per client role (writer, readers)"
                if proxied
                else "direct"
            ),
            "delivery_timeout_s": settings.delivery_timeout,
            "consumer_settings": "defaults (session.timeout.ms 45 s, static membership)",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "history": str(result.history_path) if result.history_path else None,
    }


def combine(parts: list[dict[str, Any]], *, kind: str, seed: int, seconds: float) -> dict[str, Any]:
    """The run's report of its parts: ``ok`` only if every part is, the violations and counts
    summed over the parts."""
    counts: dict[str, int] = {}
    for part in parts:
        for key, value in part["counts"].items():
            counts[key] = counts.get(key, 0) + value
    return {
        "kind": kind,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "seconds": round(seconds, 1),
        "ok": all(part["ok"] for part in parts),
        "violations_by_kind": {
            k: sum(part["violations_by_kind"][k] for part in parts) for k in KINDS
        },
        "counts": counts,
        "faults": sum(1 for part in parts for f in part["faults"] if f["name"] != BETWEEN),
        "machine": parts[0]["machine"] if parts else {},
        "parts": parts,
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
    """A run's report (:func:`combine`) or one part's (:func:`as_json`) as markdown."""
    if "parts" not in report:
        return "\n".join(_part_markdown(report, title="#")) + "\n"
    verdict = "**passed**: no violation" if report["ok"] else "**FAILED**"
    lines = [
        f"# kafkastore verify: the {report['kind']} schedule",
        "",
        f"Finished {report['finished_at']} after {report['seconds']} s (seed {report['seed']},"
        f" {report['faults']} faults in {len(report['parts'])} part(s),"
        f" {report['machine'].get('cpus')} CPUs); verdict {verdict}."
        " What each column means: docs/verify.md.",
        "",
        "Totals: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()) + ".",
        "",
        "Violations by kind: " + _by_kind(report) + ".",
    ]
    for part in report["parts"]:
        lines += ["", *_part_markdown(part, title="##")]
    return "\n".join(lines) + "\n"


def _by_kind(report: dict[str, Any]) -> str:
    by_kind = {k: n for k, n in report["violations_by_kind"].items() if n}
    return ", ".join(f"{k} {n}" for k, n in by_kind.items()) if by_kind else "none"


def _part_markdown(report: dict[str, Any], *, title: str) -> list[str]:
    verdict = "**passed**: no violation" if report["ok"] else "**FAILED**"
    topology = report["topology"]
    lines = [
        f"{title} kafkastore verify: the {report['kind']} schedule",
        "",
        f"Finished {report['finished_at']} after {report['seconds']} s (seed {report['seed']});"
        f" verdict {verdict}.",
        "",
        "Topology: three KRaft nodes (RF=3, `min.insync.replicas=2`),"
        f" PostgreSQL: {topology['postgres']}; network: {topology.get('network', 'direct')};"
        " the indexer, the HTTP API and an exactly-once projection as processes with default"
        f" settings; {report['machine']['cpus']} CPUs. What each column means: docs/verify.md.",
        "",
        "| fault | appends | acknowledged | lost | lost by setting | phantoms | duplicates |"
        " unknown (settled) | writes recovered s | longest write gap s | reads recovered s |"
        " deliveries recovered s | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for f in report["faults"]:
        p = PhaseReport(**f)
        notes = ", ".join(f"{k} {_cell(v)}" for k, v in p.notes.items())
        lines.append(
            f"| {p.name} | {p.appends} | {p.acknowledged} | {p.lost} | {p.lost_by_setting} |"
            f" {p.phantoms} | {p.duplicates} | {_settled(p)} | {_cell(p.writes_recovered_s)} |"
            f" {_cell(p.max_write_gap_s)} | {_cell(p.reads_recovered_s)} |"
            f" {_cell(p.deliveries_recovered_s)} | {notes} |"
        )
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()) + "."]
    lines += ["", "Violations by kind: " + _by_kind(report) + "."]
    for v in report["violations"][:20]:
        lines.append(f"- {v['kind']}: {v['detail']}")
    return lines


def write(report: dict[str, Any], directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(as_markdown(report), encoding="utf-8")
    return json_path, md_path
