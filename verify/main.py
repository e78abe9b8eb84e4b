"""``kafkastore verify``: start the topology, run a schedule, check it, write the report.

The short schedule (the default; the one ``make test`` runs) injects each process fault once
(:func:`process_faults`, on :mod:`verify.environment`'s topology). ``--long`` (``make verify``)
runs every process fault in several rounds with more writers, then a second part on the proxied
topology of :mod:`verify.network` (toxiproxy per client role, a synchronous PostgreSQL standby):
the network cuts and the degraded links in several rounds and, last, the failover to the standby
(:func:`network_faults`); it writes one report of both parts to
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
from typing import Any

from kafkastore.client import EventStore
from kafkastore.manifest import dev_home
from verify import environment, faults, network, report
from verify.environment import Environment
from verify.nemesis import Nemesis, NoFault
from verify.netfaults import (
    DEGRADE_MODES,
    KAFKA_MOMENTS,
    PG_MOMENTS,
    CutWriterKafka,
    CutWriterPostgres,
    DegradeWriterLinks,
    FailoverPostgres,
)
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


def network_cuts(topology: network.Topology) -> list[Nemesis]:
    """Every network cut once, at each of its moments, then each degradation of the writer's
    links (latency, bandwidth, TCP resets), after a control phase."""
    return [
        NoFault(),
        *(CutWriterKafka(topology, moment=m) for m in KAFKA_MOMENTS),
        *(CutWriterPostgres(topology, moment=m) for m in PG_MOMENTS),
        *(DegradeWriterLinks(topology, mode=m) for m in DEGRADE_MODES),
    ]


def network_faults(topology: network.Topology, count: int) -> list[Nemesis]:
    """``count`` rounds of the network cuts, then the PostgreSQL failover: last, because once
    promoted the standby runs alone (the topology has no synchronous standby left to lose)."""
    return [*rounds(lambda: network_cuts(topology), count), FailoverPostgres(topology)]


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
    config = LONG if options.long else SHORT
    started = time.monotonic()
    parts = [_process_part(home / "process", options, seed, config)]
    if options.long:
        parts.append(_network_part(home / "network", options, seed, config))
    data = report.combine(parts, kind=kind, seed=seed, seconds=time.monotonic() - started)
    directory = options.output or (RESULTS if options.long else home)
    json_path, md_path = report.write(data, directory, kind)
    _say(f"report: {md_path} and {json_path}")
    ok = bool(data["ok"])
    if options.keep or not ok:
        _say(f"kept the history and the logs in {home}")
    return 0 if ok else 1


def _process_part(
    home: Path, options: VerifyOptions, seed: int, config: WorkloadConfig
) -> dict[str, Any]:
    _say(f"process faults, seed {seed}; starting 3 Kafka nodes and PostgreSQL under {home}")
    env = environment.start(home)
    ok = False
    try:
        nemeses = (
            rounds(lambda: process_faults(env), LONG_ROUNDS)
            if options.long
            else process_faults(env)
        )
        result = _run_part(env, nemeses, home, seed, config)
        ok = result.verdict.ok
        return report.as_json(result, kind="process faults", settings=env.settings)
    finally:
        env.close(keep=options.keep or not ok)


def _network_part(
    home: Path, options: VerifyOptions, seed: int, config: WorkloadConfig
) -> dict[str, Any]:
    _say(
        f"network faults and failover, seed {seed}; starting toxiproxy, 3 Kafka nodes and a"
        f" PostgreSQL primary with its synchronous standby under {home}"
    )
    topology = network.start(home)
    ok = False
    try:
        env = network.new_run(topology)
        try:
            result = _run_part(env, network_faults(topology, LONG_ROUNDS), home, seed, config)
        finally:
            network.end_run(env)
        ok = result.verdict.ok
        return report.as_json(
            result, kind="network faults and failover", settings=env.settings, proxied=True
        )
    finally:
        topology.close(keep=options.keep or not ok)


def _run_part(
    env: Environment, nemeses: list[Nemesis], home: Path, seed: int, config: WorkloadConfig
) -> Result:
    _say("faults: " + ", ".join(n.name for n in nemeses))
    result = run_schedule(
        env,
        nemeses,
        config=config,
        seed=seed,
        history_path=home / "history.jsonl",
        progress=_say,
    )
    _say(result.verdict.summary())
    return result
