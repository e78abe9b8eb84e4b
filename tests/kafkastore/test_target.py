"""Which stack a command talks to: flags > KAFKASTORE_* > the checkout's running dev stack >
defaults (kafkastore.target), and the CLI saying so on stderr."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from dev.process import free_port
from kafkastore.client import _settings
from kafkastore.errors import ConfigurationError
from kafkastore.manifest import FILE_NAME, Manifest, is_stack_process, pid_alive, pid_cmdline
from kafkastore.retry import Backoff
from kafkastore.target import find_manifest, resolve


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KAFKASTORE_* variable of the developer's shell."""
    for name in list(os.environ):
        if name.startswith("KAFKASTORE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def stack_process() -> Iterator[int]:
    """A live process whose command line looks like each of the stack's processes."""
    argv = [sys.executable, "-c", "import time; time.sleep(120)", "kafka.Kafka", "postgres"]
    proc = subprocess.Popen([*argv, "kafkastore"])
    for _ in Backoff(initial=0.01, maximum=0.1).attempts(timeout=10.0):
        if all(is_stack_process(name, proc.pid) for name in ("kafka", "postgres", "api")):
            break
    else:
        pytest.fail(f"the stand-in process never showed its command line: {_state(proc.pid)}")
    yield proc.pid
    proc.kill()
    proc.wait()


def _state(pid: int) -> str:
    """What a failed liveness check saw of ``pid``: alive, its state and command line."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError as exc:
        stat = repr(exc)
    return f"pid {pid} alive={pid_alive(pid)} state={stat} cmdline={pid_cmdline(pid)!r}"


def _checkout(root: Path, pid: int) -> Manifest:
    """A checkout at ``root`` whose dev stack runs (as ``pid``) on non-default ports."""
    (root / ".kafkastore").mkdir(parents=True)
    manifest = Manifest(
        kafka="127.0.0.1:19092",
        database_url="postgresql://postgres@127.0.0.1:15432/kafkastore",
        api="http://127.0.0.1:18080",
        topic="events",
        pids={"kafka": pid, "postgres": pid, "api": pid, "indexer": pid},
    )
    manifest.write(root / ".kafkastore" / FILE_NAME)
    return manifest


@pytest.mark.usefixtures("clean_env")
def test_the_running_dev_stack_of_the_checkout_is_used_before_the_defaults(
    tmp_path: Path, stack_process: int
) -> None:
    manifest = _checkout(tmp_path, stack_process)
    inside = tmp_path / "src" / "deeper"
    inside.mkdir(parents=True)

    target = resolve(cwd=inside)

    assert find_manifest(inside) == tmp_path / ".kafkastore" / FILE_NAME
    assert target.stack is not None, f"stack not taken as running: {_state(stack_process)}"
    assert (target.settings.kafka, target.settings.database_url, target.settings.api_url) == (
        manifest.kafka,
        manifest.database_url,
        manifest.api,
    )
    assert set(target.sources.values()) == {"dev stack"}
    line = target.describe()
    assert line is not None
    assert "Kafka 127.0.0.1:19092" in line
    assert str(tmp_path / ".kafkastore" / FILE_NAME) in line


@pytest.mark.usefixtures("clean_env")
def test_flags_beat_the_environment_which_beats_the_running_stack(
    tmp_path: Path, stack_process: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _checkout(tmp_path, stack_process)
    monkeypatch.setenv("KAFKASTORE_KAFKA", "10.0.0.1:9092")
    monkeypatch.setenv("KAFKASTORE_DATABASE_URL", "postgresql://u:secret@10.0.0.2/db")

    target = resolve({"kafka": "10.0.0.9:9092"}, flag_names={"kafka": "--kafka"}, cwd=tmp_path)

    assert target.settings.kafka == "10.0.0.9:9092"
    assert target.settings.database_url == "postgresql://u:secret@10.0.0.2/db"
    assert target.settings.api_url == manifest.api
    assert target.sources == {
        "kafka": "flag",
        "database_url": "environment",
        "topic": "dev stack",
        "api_url": "dev stack",
    }
    line = target.describe() or ""
    assert "Kafka 10.0.0.9:9092 (--kafka)" in line
    assert "(KAFKASTORE_DATABASE_URL)" in line
    assert "secret" not in line  # passwords are not printed
    assert f"API {manifest.api}" in line
    # A command that never calls the API (serve listens where its own flags say) is not told
    # about the dev stack's API URL.
    assert "API" not in (target.describe(uses_api=False) or "")


@pytest.mark.usefixtures("clean_env")
def test_without_a_stack_the_defaults_are_used_and_nothing_is_said(tmp_path: Path) -> None:
    target = resolve(cwd=tmp_path)

    assert target.is_default
    assert target.settings.kafka == "127.0.0.1:9092"
    assert target.describe() is None


@pytest.mark.usefixtures("clean_env")
def test_a_stack_whose_processes_are_gone_is_ignored_and_the_command_says_so(
    tmp_path: Path,
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _checkout(tmp_path, gone.pid)

    target = resolve(cwd=tmp_path)

    assert target.settings.kafka == "127.0.0.1:9092"
    assert target.stack is None
    assert "its processes are gone" in (target.describe() or "")


@pytest.mark.usefixtures("clean_env")
def test_event_store_connect_without_arguments_uses_the_running_stack(
    tmp_path: Path, stack_process: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _checkout(tmp_path, stack_process)
    monkeypatch.chdir(tmp_path)

    settings = _settings(None, None, None, None, {})
    given = _settings(None, "10.0.0.1:9092", None, None, {})

    assert (settings.kafka, settings.database_url) == (manifest.kafka, manifest.database_url)
    assert (given.kafka, given.database_url) == ("10.0.0.1:9092", manifest.database_url)


def test_read_honours_kafkastore_api_url_and_says_which_api_it_reads(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKASTORE_")}
    env["KAFKASTORE_API_URL"] = closed

    done = subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", "read", "Order-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=env,
    )

    assert done.returncode == 3, done.stderr
    assert f"using API {closed} (KAFKASTORE_API_URL)" in done.stderr
    assert f"cannot reach {closed}" in done.stderr


@pytest.mark.usefixtures("clean_env")
def test_a_secured_stack_lends_its_kafka_logins_unless_the_environment_has_its_own(
    tmp_path: Path, stack_process: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _checkout(tmp_path, stack_process)
    logins = tmp_path / ".kafkastore" / "clients.json"
    consumer = {"sasl.username": "consumer", "sasl.password": "c"}
    writer = {"sasl.username": "writer", "sasl.password": "w"}
    logins.write_text(orjson.dumps({"extra_kafka": consumer, "writer_kafka": writer}).decode())
    secured = dataclasses.replace(manifest, kafka_logins=logins)
    secured.write(tmp_path / ".kafkastore" / FILE_NAME)
    assert Manifest.load(tmp_path / ".kafkastore" / FILE_NAME) == secured

    lent = resolve(cwd=tmp_path).settings
    monkeypatch.setenv("KAFKASTORE_EXTRA_KAFKA", "sasl.username=mine")
    own = resolve(cwd=tmp_path).settings

    assert (dict(lent.extra_kafka), dict(lent.writer_kafka)) == (consumer, writer)
    assert dict(own.extra_kafka) == {"sasl.username": "mine"}
    logins.write_text("not json")
    with pytest.raises(ConfigurationError):
        resolve(cwd=tmp_path)
