"""The short schedule of ``kafkastore verify`` (marked slow): every process fault once on the
three-node topology with default settings, judged by the checker, then the negative control -
a deliberately broken writer through the same pause fault - which the checker must catch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from dev import postgres
from kafkastore.config import running_in_ci
from tests.support import unique
from tests.support.services import SessionServices
from tests.verify.broken import commit_before_acks
from verify import environment, faults, report
from verify.environment import Environment
from verify.main import SHORT, process_faults, run_schedule
from verify.nemesis import NoFault

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def topology(session_services: SessionServices) -> Iterator[Environment]:
    home = session_services.workdir / unique("verify")
    try:
        env = environment.start(home)
    except Exception as exc:
        message = f"the verification topology did not start: {exc}"
        if running_in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield env
    env.close(keep=True)  # the logs and histories stay in the session's workdir...
    shutil.rmtree(home / "kafka", ignore_errors=True)
    postgres.remove(home / "postgres")  # ...but not the cluster's files kept outside it


def test_the_short_schedule_of_process_faults_keeps_every_guarantee(
    topology: Environment,
) -> None:
    history = topology.home / "short-history.jsonl"

    result = run_schedule(
        topology, process_faults(topology), config=SHORT, seed=13, history_path=history
    )

    data = report.as_json(result, kind="short", settings=topology.settings)
    report.write(data, topology.home, "short")
    print(report.as_markdown(data))
    verdict = result.verdict
    assert verdict.ok, verdict.summary()
    by_name = {p.name: p for p in verdict.phases}
    assert set(by_name) >= {n.name for n in process_faults(topology)}
    # Enough happened for the verdict to mean something: appends acknowledged during every
    # fault, every one of them read back, and the faults really hit.
    assert all(by_name[n].acknowledged > 0 for n in by_name if n != "between faults")
    # Every acknowledged event is read back, but for those the WAL-losing crash took: the
    # synchronous_commit=off it runs with allows that loss (counted apart, never a phantom).
    readable = verdict.counts["acknowledged_events"] - verdict.counts["lost_by_setting"]
    assert verdict.counts["all_read"] >= readable > 100
    assert verdict.counts["delivered"] == verdict.counts["all_read"]
    assert by_name["kill-partition-leader"].notes.get("leader_moved_s") is not None
    assert by_name["kill-indexer"].notes.get("resumed_after_restart_s") is not None
    assert by_name["kill-consumer"].notes.get("resumed_after_restart_s") is not None
    # The member that left held its partitions until its session timed out: the rebalance's
    # row, not the next fault's, shows that stall of the deliveries.
    assert by_name["rebalance"].notes.get("caught_up_after_leave_s") is not None
    assert by_name["rebalance"].deliveries_recovered_s is not None
    crash = by_name["postgres-crash-losing-wal"]
    assert crash.notes.get("killed_processes", 0) > 1
    assert crash.notes.get("walwriter_stopped") is True
    # The crash really lost WAL: appends acknowledged in its hold are gone, and xids handed out
    # before it were handed out again after recovery, as the writer's messages in Kafka show.
    # The verdict took none of the lost transactions' messages for real (the checker fails a
    # phantom otherwise), and some of the new transactions' under the same xids it did.
    assert crash.lost_by_setting > 0
    assert crash.notes.get("xids_handed_out_again", 0) > 0
    assert crash.notes.get("xids_of_two_writes", 0) > 0
    assert verdict.counts["xids_reissued"] == crash.notes["xids_of_two_writes"]
    assert verdict.counts["reissued_read_before"] == 0
    assert verdict.counts["reissued_read_after"] > 0
    assert json.loads(json.dumps(data))["ok"] is True


def test_the_negative_control_a_writer_that_commits_before_the_acks_is_caught(
    topology: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment.new_run(topology)  # its own topic and database: nothing of the first run
    commit_before_acks(monkeypatch)

    result = run_schedule(
        topology,
        [NoFault(), faults.PauseBroker(topology)],
        config=SHORT,
        seed=13,
        history_path=topology.home / "broken-history.jsonl",
    )

    print(result.verdict.summary())
    pause = next(p for p in result.verdict.phases if p.name == "pause-partition-leader")
    assert not result.verdict.ok, "the checker did not catch a writer that commits before acks"
    assert "lost" in result.verdict.kinds()
    assert pause.lost > 0
