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
    """The README's round trip against a secured stack (the block it marks as run here), as a
    user runs it after exporting the printed token: every request must succeed."""
    import os
    import subprocess

    from tests.test_readme import README, ROOT, blocks

    [block] = [b for b in blocks(README.read_text()) if "test_dev_stack.py" in (b.not_run or "")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKASTORE_")}
    env.update(KAFKASTORE_DEV_HOME=str(home), KAFKASTORE_API_URL=api, KAFKASTORE_TOKEN=token)
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
    # curl's answers have no newline: the status of the request without a token ends a line.
    assert any(line.endswith("}401") for line in done.stdout.splitlines())
    assert '"type":"OrderPlaced"' in done.stdout.replace(" ", "")  # kafkastore read, with it
    assert token not in done.stdout + done.stderr


def test_dev_says_at_start_when_auth_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    from dev.command import _print_auth
    from dev.stack import Stack

    _print_auth(Stack(home=Path("unused")))

    printed = capsys.readouterr()
    assert "auth is off" in printed.err and "--auth" in printed.err
    assert "kst_" not in printed.out
