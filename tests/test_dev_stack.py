"""The local stack of ``dev/``: real processes on given ports, stopped without leftovers."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dev import postgres as dev_postgres
from dev.command import run_in, stop_in
from dev.process import (
    StackError,
    child_environment,
    choose_port,
    free_port,
    pid_alive,
    port_accepts,
)
from kafkastore.config import running_in_ci


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    # pytest's tmp dirs are private (0700) to root: as root the cluster's files go to a
    # directory the `postgres` user owns (dev.postgres.cluster_files), removed here.
    path = tmp_path / "stack"
    path.mkdir()
    yield path
    if (path / "dev.json").exists():
        stop_in(path)  # a failed test must not leave a stack running on deleted directories
    dev_postgres.remove(path / "postgres")
    dev_postgres.remove(path / "postgres-standby")
    shutil.rmtree(path, ignore_errors=True)


def test_a_busy_port_given_explicitly_is_refused() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        with pytest.raises(StackError, match=f"port {port} is already in use"):
            choose_port(port, 9092, what="Kafka")


def _wait_for_manifest(
    path: Path, proc: subprocess.Popen[bytes], timeout: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            doc: dict[str, object] = json.loads(path.read_text())
            return doc
        if proc.poll() is not None:
            output = (path.parent / "dev.out").read_text(errors="replace")
            raise AssertionError(f"kafkastore dev exited with {proc.returncode}:\n{output}")
        time.sleep(0.2)
    raise AssertionError(f"no {path} after {timeout}s")


def _kcat() -> str | None:
    """kcat, a Kafka client we did not write; under CI=true its absence fails the test, elsewhere
    only the check that needs it is left out (the dev stack does not need kcat)."""
    kcat = shutil.which("kcat")
    if kcat is None and running_in_ci():
        pytest.fail("kcat is not installed (CI=true): apt-get install kcat", pytrace=False)
    return kcat


@pytest.mark.slow
def test_dev_in_the_foreground_stops_every_process_on_ctrl_c(home: Path) -> None:
    kcat = _kcat()
    ports = [str(free_port()) for _ in range(3)]
    argv = [sys.executable, "-m", "kafkastore.cli", "dev", "--kafka-port", ports[0]]
    argv += ["--pg-port", ports[1], "--api-port", ports[2]]
    env = child_environment({"KAFKASTORE_DEV_HOME": str(home)})
    with (home / "dev.out").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        doc = _wait_for_manifest(home / "dev.json", proc, timeout=120)
        pids = doc["pids"]
        assert isinstance(pids, dict)
        assert doc["kafka"] == f"127.0.0.1:{ports[0]}"
        assert doc["api"] == f"http://127.0.0.1:{ports[2]}"
        assert {"kafka", "postgres", "api", "indexer"} <= set(pids)
        assert all(pid_alive(pid) for pid in pids.values())
        if kcat is not None:
            listing = subprocess.run(
                [kcat, "-b", str(doc["kafka"]), "-L"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert f'topic "{doc["topic"]}"' in listing.stdout

        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            stop_in(home)

    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
    assert not (home / "dev.json").exists()


@pytest.mark.slow
def test_dev_detached_uses_the_given_ports_and_dev_stop_leaves_no_process(home: Path) -> None:
    kafka_port, pg_port, api_port = free_port(), free_port(), free_port()

    code = run_in(home, detach=True, kafka_port=kafka_port, pg_port=pg_port, api_port=api_port)
    try:
        assert code == 0
        doc = json.loads((home / "dev.json").read_text())
        assert doc["kafka"] == f"127.0.0.1:{kafka_port}"
        assert doc["database_url"] == f"postgresql://postgres@127.0.0.1:{pg_port}/kafkastore"
        assert doc["api"] == f"http://127.0.0.1:{api_port}"
        assert {"kafka", "postgres", "api", "indexer"} <= set(doc["pids"])
        assert all(pid_alive(pid) for pid in doc["pids"].values())
        with psycopg.connect(doc["database_url"]) as conn:
            # Migrated, and durable: fsync stays on even on a dev box.
            assert conn.execute("SELECT count(*) FROM streams").fetchone() is not None
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
        _check_metrics_tell_the_truth(doc)
    finally:
        assert stop_in(home) == 0

    assert [name for name, pid in doc["pids"].items() if pid_alive(pid)] == []
    assert not port_accepts(kafka_port)
    assert not port_accepts(pg_port)
    assert not (home / "dev.json").exists()


@pytest.mark.slow
def test_dev_with_a_pg_standby_commits_on_both_nodes_and_dev_stop_stops_both(home: Path) -> None:
    code = run_in(home, detach=True, pg_standby=True, demo=False)
    try:
        assert code == 0
        doc = json.loads((home / "dev.json").read_text())
        primary, standby = doc["postgres"]["url"], doc["postgres_standby"]["url"]
        ports = ",".join(url.rsplit(":", 1)[1].split("/")[0] for url in (primary, standby))
        assert doc["database_url"] == (
            f"host=127.0.0.1,127.0.0.1 port={ports} user=postgres "
            "dbname=kafkastore target_session_attrs=read-write connect_timeout=10"
        )
        assert {"postgres", "postgres-standby"} <= set(doc["pids"])
        with psycopg.connect(primary, autocommit=True) as conn:
            assert conn.execute(
                "SELECT application_name, sync_state FROM pg_stat_replication"
            ).fetchall() == [("kafkastore_standby", "sync")]
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        with psycopg.connect(doc["database_url"], autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        request = urllib.request.Request(
            f"{doc['api']}/streams/standby-1",
            data=json.dumps({"events": [{"type": "Checked", "data": {}}]}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 201
        # A synchronous commit was flushed by the standby before it returned; replaying it
        # there follows at once.
        with psycopg.connect(standby, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            deadline = time.monotonic() + 10
            while not conn.execute(
                "SELECT 1 FROM streams WHERE stream_id = 'standby-1'"
            ).fetchone():
                assert time.monotonic() < deadline, "the standby did not replay the append"
                time.sleep(0.1)
    finally:
        assert stop_in(home) == 0

    assert [name for name, pid in doc["pids"].items() if pid_alive(pid)] == []


def test_a_busy_default_port_is_replaced_and_dev_says_which_it_took(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dev.stack import _port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        default = busy.getsockname()[1]

        port = _port(None, default, what="Kafka", flag="--kafka-port")

    said = " ".join(capsys.readouterr().err.split())
    assert port != default
    assert f"Kafka: port {default} is busy (another stack?); using {port}" in said


def _check_metrics_tell_the_truth(doc: dict[str, object]) -> None:
    """The indexer serves its own counters (listed in dev.json); the API exports none of them."""
    from dev.services import http_json

    url = doc["indexer_metrics"]
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    status, _ = http_json(
        "POST", f"{doc['api']}/streams/Metered-1", {"events": [{"type": "Tick", "data": {}}]}
    )
    assert status == 201
    deadline = time.monotonic() + 60
    while True:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        counted = [
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("kafkastore_indexer_events_indexed_total ")
        ]
        if counted and counted[0] >= 1:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert 'kafkastore_indexer_phantoms_skipped_total{reason="no_marker"}' in text
    api = urllib.request.urlopen(f"{doc['api']}/metrics", timeout=10).read().decode()
    assert "kafkastore_indexer_" not in api


@pytest.mark.slow
def test_dev_with_auth_prints_an_admin_token_that_the_api_demands_and_accepts(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    ports = free_port(), free_port(), free_port()
    code = run_in(
        home, detach=True, kafka_port=ports[0], pg_port=ports[1], api_port=ports[2], auth=True
    )
    try:
        assert code == 0
        printed = capsys.readouterr()
        tokens = [line for line in printed.out.splitlines() if line.startswith("kst_")]
        assert len(tokens) == 1
        assert "auth is on" in printed.err
        assert tokens[0] not in (home / "dev.json").read_text()
        api = f"http://127.0.0.1:{ports[2]}"
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        body = {"events": [{"type": "Checked", "data": {}}]}
        assert httpx.post(f"{api}/streams/auth-1", json=body).status_code == 401
        assert httpx.post(f"{api}/streams/auth-1", json=body, headers=headers).status_code == 201
        read = httpx.get(
            f"{api}/streams/auth-1?min_version=1&timeout_ms=10000", headers=headers, timeout=20
        )
        assert read.status_code == 200 and read.json()["version"] == 1
        # The broker speaks SASL/SCRAM only: a client without credentials gets nothing.
        from kafkastore.config import Settings
        from kafkastore.errors import Unavailable
        from kafkastore.kafka import check_reachable

        with pytest.raises(Unavailable):
            check_reachable(Settings(kafka=f"127.0.0.1:{ports[0]}"), timeout=3.0)
        _run_the_readme_auth_example(home, api, tokens[0])
    finally:
        assert stop_in(home) == 0


def _run_the_readme_auth_example(home: Path, api: str, token: str) -> None:
    """The README's blocks of its "Security" section that it marks as run here (a stream ACL, the
    round trip, the CLI's users and tokens), in order in one shell, as a user runs them after
    exporting the printed token: every command must succeed."""
    import os
    import subprocess

    from tests.test_readme import README, ROOT, blocks

    marked = [b for b in blocks(README.read_text()) if "test_dev_stack.py" in (b.not_run or "")]
    assert len(marked) == 3, [b.line for b in marked]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKASTORE_")}
    env.update(KAFKASTORE_DEV_HOME=str(home), KAFKASTORE_API_URL=api, KAFKASTORE_TOKEN=token)
    said: list[str] = []
    for block in marked:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"README.md line {block.line}:\n{done.stdout}\n{done.stderr}"
        said.append(done.stdout + done.stderr)
    acl, round_trip, cli = said
    assert '"stream_id":"Payroll-7"' in acl.replace(" ", "") and '"$ops"' in acl
    # curl's answers have no newline: the status of the request without a token ends a line.
    assert any(line.endswith("}401") for line in round_trip.splitlines())
    assert '"type":"OrderPlaced"' in round_trip.replace(" ", "")  # kafkastore read, with it
    assert '"name": "bob"' in cli and "revoked token " in cli and "removed user 'bob'" in cli
    assert "kst_" not in cli  # the new token is kept in a variable, never printed
    assert all(token not in text for text in said)


def test_dev_says_at_start_when_auth_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    from dev.command import _print_auth
    from dev.stack import Stack

    _print_auth(Stack(home=Path("unused")))

    printed = capsys.readouterr()
    assert "auth is off" in printed.err and "--auth" in printed.err
    assert "kst_" not in printed.out
