"""``kafkastore bench`` end to end on the test session's services: the run's database, topic,
API and indexer are set up as `make bench` does, one tiny workload runs, and the results are
written. A broken bench environment (e.g. an API whose /readyz never turns ready) fails here.

No timing is asserted (benchmarks are not tests); the figures only have to exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import main
from bench.options import BenchOptions
from kafkastore import pg
from kafkastore.config import Settings


@pytest.mark.slow
def test_a_quick_bench_run_sets_up_its_services_runs_a_workload_and_writes_results(
    make_settings: Callable[..., Settings], postgres_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url=postgres_url, create_topic=False)
    options = BenchOptions(
        quick=True,
        only=("kafkastore_http_100_per_s",),
        services_given=True,
        results_dir=tmp_path,
        output=tmp_path / "out.json",
    )
    assert main.run(options, settings) == 0
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["run"]["failures"] == {}
    assert doc["run"]["stack_warm_up"]["seconds"] > 0  # the unrecorded appends ran first
    result = doc["results"]["kafkastore_http_100_per_s"]
    assert result["errors"] == 0
    assert result["acknowledged_events"] > 0  # (how many fell inside the window is timing)
    assert result["index_backlog_after_settle"] == 0  # the run's indexer indexed them
    assert set(result["cpu"]["cpu_s_by_process"]) >= {"kafka", "postgresql", "api", "indexer"}
    assert "kafkastore_http_100_per_s" in (tmp_path / "latest.md").read_text()
    # The run's database is dropped at its end.
    with pg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = %s", (f"bench_{doc['run']['run_id']}",)
        ).fetchall()
    assert rows == []
