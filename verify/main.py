"""``kafkastore verify``: start the topology, run a schedule, check it, write the report.

The short schedule (the default; the one ``make test`` runs) injects each fault once; ``--long``
(``make verify``) runs every fault in several rounds with more writers, and writes its report to
``verify/results/long.{md,json}`` (the figures the README links). Exit status 0 when the checker
found no violation, 1 when it found one (the history and the services' logs are then kept).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafkastore.client import EventStore
from kafkastore.manifest import dev_home
from verify import environment, faults, report
from verify.environment import Environment
from verify.nemesis import Nemesis, NoFault
from verify.schedule import Result, Schedule
from verify.workload import AppendWorkload, StoreFactory, WorkloadConfig

logger = logging.getLogger("kafkastore.verify")

RESULTS = Path(__file__).resolve().parent / "results"
"""Where ``--long`` writes its report (committed: the README links it)."""

SHORT = WorkloadConfig(python_writers=3, http_writers=1)
LONG = WorkloadConfig(python_writers=4, http_writers=2, cold_streams=200)
LONG_ROUNDS = 3


def process_faults(env: Environment) -> list[Nemesis]:
    """Every process-level fault once, in an order that lets each recover before the next."""
    return [
        NoFault(),
        faults.Rebalance(env),
        faults.KillLeader(env),
        faults.KillIndexer(env),
        faults.PauseBroker(env),
        faults.KillConsumer(env),
        faults.CrashPostgres(env),
    ]


def rounds(make: Callable[[], list[Nemesis]], count: int) -> list[Nemesis]:
    """``count`` rounds of the faults ``make()`` returns, named ``<fault> #<round>``."""
    out: list[Nemesis] = []
    for r in range(1, count + 1):
        for nemesis in make():
            nemesis.name = f"{nemesis.name} #{r}"
            out.append(nemesis)
    return out


def run_schedule(
    env: Environment,
    nemeses: list[Nemesis],
    *,
    config: WorkloadConfig,
    seed: int,
    history_path: Path | None = None,
    store_factory: StoreFactory | None = None,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """One schedule on ``env`` (fresh topic and database first when ``env`` ran one before)."""
    workload = AppendWorkload(
        env.settings,
        config,
        api_url=env.api_url,
        seed=seed,
        store_factory=store_factory or EventStore,
    )
    schedule = Schedule(env.settings, workload, nemeses, seed=seed, history_path=history_path)
    if progress is not None:
        schedule.progress = progress
    try:
        return schedule.run()
    finally:
        workload.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyOptions:
    long: bool = False
    seed: int | None = None
    output: Path | None = None
    keep: bool = False


def _say(message: str) -> None:
    print(f"verify: {message}", file=sys.stderr, flush=True)


def run(options: VerifyOptions) -> int:
    seed = options.seed if options.seed is not None else int(time.time()) % 100_000
    kind = "long" if options.long else "short"
    home = dev_home() / "verify" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    _say(f"{kind} schedule, seed {seed}; starting 3 Kafka nodes and PostgreSQL under {home}")
    env = environment.start(home)
    ok = False
    try:
        nemeses = (
            rounds(lambda: process_faults(env), LONG_ROUNDS)
            if options.long
            else process_faults(env)
        )
        _say("faults: " + ", ".join(n.name for n in nemeses))
        result = run_schedule(
            env,
            nemeses,
            config=LONG if options.long else SHORT,
            seed=seed,
            history_path=home / "history.jsonl",
            progress=_say,
        )
        ok = result.verdict.ok
        data = report.as_json(result, kind=kind, settings=env.settings)
        directory = options.output or (RESULTS if options.long else home)
        json_path, md_path = report.write(data, directory, kind)
        _say(result.verdict.summary())
        _say(f"report: {md_path} and {json_path}")
    finally:
        env.close(keep=options.keep or not ok)
        if options.keep or not ok:
            _say(f"kept the history and the logs in {home}")
    return 0 if ok else 1
