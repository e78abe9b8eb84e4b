"""Two runs side by side: ``python -m bench.compare BEFORE.json AFTER.json [--output FILE]``.

For a before/after of the code measured in one sitting (see bench/README.md): each target of
issue 14 recomputed from both runs' results with today's definitions, the sustained ramp's steps
side by side, then every workload both runs have, with events/s and whole-stack CPU per event
and the ratio after / before. The baselines (raw Kafka, the naive store, eventsourcing) run the
same code in both, so their ratios show how much the machine itself drifted between the runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import targets
from bench.fmt import ms, num, table
from bench.sections import verdict

Results = Mapping[str, Mapping[str, Any]]


def _ratio(after: Any, before: Any) -> str:
    if isinstance(after, (int, float)) and isinstance(before, (int, float)) and before:
        return f"{after / before:.2f}"
    return "-"


def targets_rows(before: Results, after: Results) -> list[list[str]]:
    rows = []
    for b, a in zip(targets.targets(before), targets.targets(after), strict=True):
        rows.append(
            [
                a["target"],
                num(a["threshold"], 1),
                f"{num(b['measured'], 3)} ({verdict(b)})",
                f"{num(a['measured'], 3)} ({verdict(a)})",
                _ratio(a["measured"], b["measured"]),
            ]
        )
    return rows


def _cpu(r: Mapping[str, Any]) -> Any:
    cost = r.get("cpu_us_per_event")
    return cost.get("total") if isinstance(cost, Mapping) else None


def _rate(r: Mapping[str, Any]) -> Any:
    return r.get("sustained_events_per_s", r.get("events_per_s"))


def workload_rows(before: Results, after: Results) -> list[list[str]]:
    rows = []
    for name in (n for n in after if n in before):
        b, a = before[name], after[name]
        rows.append(
            [
                f"`{name}`",
                num(_rate(b)),
                num(_rate(a)),
                _ratio(_rate(a), _rate(b)),
                num(_cpu(b), 1),
                num(_cpu(a), 1),
                _ratio(_cpu(a), _cpu(b)),
            ]
        )
    return rows


def ramp_rows(before: Results, after: Results, name: str) -> list[list[str]]:
    """The ramp's steps both runs offered: append p50/p99 and CPU per event, before -> after (a
    headline can move a whole step on a p99 a millisecond either side of 100 ms)."""
    steps = [
        {s.get("offered_events_per_s"): s for s in run.get(name, {}).get("steps", [])}
        for run in (before, after)
    ]
    rows = []
    for offered in (o for o in steps[1] if o in steps[0]):
        b, a = steps[0][offered], steps[1][offered]
        rows.append(
            [
                num(offered),
                f"{ms(b.get('append_p50_ms'))} / {ms(b.get('append_p99_ms'))}",
                f"{ms(a.get('append_p50_ms'))} / {ms(a.get('append_p99_ms'))}",
                f"{num(_cpu(b), 1)} -> {num(_cpu(a), 1)}",
                f"{_kept(b)} -> {_kept(a)}",
            ]
        )
    return rows


def _kept(step: Mapping[str, Any]) -> str:
    return "kept" if step.get("sustained") else "not kept"


def markdown(before: Mapping[str, Any], after: Mapping[str, Any], names: Sequence[str]) -> str:
    b, a = before["results"], after["results"]
    started = [doc.get("run", {}).get("started_at", "?") for doc in (before, after)]
    out = [
        "# Before / after",
        "",
        f"Before: {names[0]} (run {started[0]}). After: {names[1]} (run {started[1]}).",
        "",
        "## Targets of issue 14",
        "",
        *table(["target", "threshold", "before", "after", "after / before"], targets_rows(b, a)),
        "",
        "## The sustained ramp of kafkastore, step by step",
        "",
        *table(
            [
                "offered events/s",
                "append p50 / p99 ms before",
                "after",
                "CPU us/event",
                "sustained",
            ],
            ramp_rows(b, a, "kafkastore_sustained"),
        ),
        "",
        "## Workloads (events/s: the highest sustained step for the ramps)",
        "",
        *table(
            [
                "workload",
                "events/s before",
                "after",
                "ratio",
                "CPU us/event before",
                "after",
                "ratio",
            ],
            workload_rows(b, a),
        ),
        "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("before", type=Path, help="the JSON of the run of the earlier code")
    parser.add_argument("after", type=Path, help="the JSON of the run of the later code")
    parser.add_argument("--output", type=Path, help="write the markdown here (else stdout)")
    args = parser.parse_args(argv)
    docs = [orjson.loads(path.read_bytes()) for path in (args.before, args.after)]
    text = markdown(docs[0], docs[1], [args.before.name, args.after.name])
    if args.output:
        args.output.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
