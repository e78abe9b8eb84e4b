"""Network faults and the PostgreSQL failover in the proxied topology (:mod:`verify.network`),
under the workload of :mod:`verify.workload`, judged by :mod:`verify.checker`.

Each test runs a short schedule of one kind of fault at several moments of the writer's
protocol (timing and how the link breaks drawn from the seed, which is printed: rerun one with
``KAFKASTORE_TEST_SEED=<n>``) and asserts the checker's verdict: nothing acknowledged lost, no
phantom read or delivered, no duplicate, every unknown outcome settled all-or-nothing. Each
fault's figures (acknowledged, unknown and how they settled, time until writes and reads
recovered) are printed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest

from kafkastore import kafka
from kafkastore.config import environ_get
from verify import network
from verify.environment import Environment
from verify.main import run_schedule
from verify.nemesis import Nemesis
from verify.netfaults import (
    DEGRADE_MODES,
    CutWriterKafka,
    CutWriterPostgres,
    DegradeWriterLinks,
    FailoverPostgres,
)
from verify.schedule import Result
from verify.verdict import PhaseReport
from verify.workload import WorkloadConfig

# The session's proxied topology starts in the first of them (1-3 minutes here).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LOAD = WorkloadConfig(python_writers=3, http_writers=1, cold_streams=30)


@pytest.fixture
def seed() -> int:
    given = environ_get("KAFKASTORE_TEST_SEED")
    chosen = int(given) if given else random.SystemRandom().randrange(100_000)
    print(f"seed {chosen} (KAFKASTORE_TEST_SEED={chosen} repeats this schedule)")
    return chosen


@pytest.fixture
def run(healed_topology: network.Topology) -> Iterator[Environment]:
    env = network.new_run(healed_topology)
    yield env
    network.end_run(env)


def _schedule(env: Environment, nemeses: list[Nemesis], seed: int) -> Result:
    result = run_schedule(env, nemeses, config=LOAD, seed=seed)
    for phase in result.verdict.phases:
        print(json.dumps(phase.as_json(), default=str))
    assert result.verdict.ok, result.verdict.summary()
    return result


def _fault_rows(result: Result, prefix: str) -> list[PhaseReport]:
    rows = [p for p in result.verdict.phases if p.name.startswith(prefix)]
    assert rows, [p.name for p in result.verdict.phases]
    for row in rows:
        assert row.lost == row.phantoms == row.duplicates == 0
        # The cut was made inside a batch at its step (not at the end of the wait for one).
        assert "no_batch_reached_step_within_s" not in row.notes, row.notes
    return rows


def test_the_topology_advertises_each_role_its_own_proxies(
    healed_topology: network.Topology,
) -> None:
    base = healed_topology.new_database()
    for role in network.ROLES:
        settings = healed_topology.settings(role, base)
        with kafka.translated():
            brokers = kafka.admin(settings).list_topics(timeout=10.0).brokers.values()
        advertised = sorted(f"{b.host}:{b.port}" for b in brokers)
        assert advertised == sorted(p.address for p in healed_topology.links[role].kafka.values())
    assert healed_topology.api.proxies()  # the driver lists what the topology made


def test_cutting_the_writer_from_kafka_before_during_and_after_the_acks_loses_nothing(
    run: Environment, healed_topology: network.Topology, seed: int
) -> None:
    nemeses: list[Nemesis] = [
        CutWriterKafka(healed_topology, moment=m)
        for m in ("before_acks", "during_acks", "after_acks")
    ]
    result = _schedule(run, nemeses, seed)
    _fault_rows(result, CutWriterKafka.name)


def test_cutting_the_writer_from_postgres_before_commit_and_before_its_reply_loses_nothing(
    run: Environment, healed_topology: network.Topology, seed: int
) -> None:
    nemeses: list[Nemesis] = [
        CutWriterPostgres(healed_topology, moment=m) for m in ("before_commit", "commit_reply")
    ]
    result = _schedule(run, nemeses, seed)
    _fault_rows(result, CutWriterPostgres.name)


def test_degrading_the_writer_links_with_latency_bandwidth_and_resets_loses_nothing(
    run: Environment, healed_topology: network.Topology, seed: int
) -> None:
    nemeses: list[Nemesis] = [DegradeWriterLinks(healed_topology, mode=m) for m in DEGRADE_MODES]
    result = _schedule(run, nemeses, seed)
    rows = {row.notes["mode"]: row for row in _fault_rows(result, DegradeWriterLinks.name)}
    assert sorted(rows) == sorted(DEGRADE_MODES)
    # Degraded, not cut: appends went on being acknowledged through every one of them.
    assert all(row.acknowledged > 0 for row in rows.values()), rows


def test_killing_the_postgres_primary_and_promoting_its_synchronous_standby_loses_nothing(
    run: Environment, healed_topology: network.Topology, seed: int
) -> None:
    started = time.monotonic()
    try:
        result = _schedule(run, [FailoverPostgres(healed_topology)], seed)
        (row,) = _fault_rows(result, FailoverPostgres.name)
        notes = row.notes
        print(
            f"failover: promote {notes['promote_s']}s, writable {notes['writable_after_kill_s']}s "
            f"after the kill; writes recovered {row.writes_recovered_s}s, "
            f"reads {row.reads_recovered_s}s after it"
        )
        assert healed_topology.failed_over
    finally:
        network.end_run(run)
        healed_topology.fresh_postgres()  # the next test gets a synchronous pair again
    print(f"the failover schedule took {time.monotonic() - started:.0f}s")
