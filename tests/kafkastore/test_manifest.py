"""``.kafkastore/dev.json`` read and written through one type, and ``kafkastore dev env``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dev.process import child_environment
from kafkastore.errors import ConfigurationError
from kafkastore.manifest import FILE_NAME, Manifest, PostgresFiles


def _manifest(tmp_path: Path) -> Manifest:
    return Manifest(
        kafka="127.0.0.1:19092",
        database_url="postgresql://postgres@127.0.0.1:15432/kafkastore",
        api="http://127.0.0.1:18080",
        indexer_metrics="http://127.0.0.1:19464/metrics",
        topic="events",
        pids={"kafka": 11, "postgres": 12, "api": 13, "indexer": 14},
        postgres=PostgresFiles(data_dir=tmp_path / "pg" / "data", bindir=Path("/usr/bin")),
        logs=tmp_path / "logs",
    )


def test_a_written_manifest_loads_as_the_same_value(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)

    manifest.write(tmp_path / FILE_NAME)

    assert Manifest.load(tmp_path / FILE_NAME) == manifest
    assert list(json.loads((tmp_path / FILE_NAME).read_text())) == [
        "kafka",
        "database_url",
        "api",
        "indexer_metrics",
        "topic",
        "pids",
        "postgres",
        "logs",
    ]


def test_a_manifest_with_a_standby_keeps_both_nodes_and_the_multi_host_url(
    tmp_path: Path,
) -> None:
    url = (
        "host=127.0.0.1,127.0.0.1 port=15432,15433 user=postgres dbname=kafkastore "
        "target_session_attrs=read-write connect_timeout=10"
    )
    manifest = Manifest(
        kafka="127.0.0.1:19092",
        database_url=url,
        topic="events",
        pids={"kafka": 11, "postgres": 12, "postgres-standby": 13},
        postgres=PostgresFiles(
            data_dir=tmp_path / "pg" / "data",
            bindir=Path("/usr/bin"),
            url="postgresql://postgres@127.0.0.1:15432/kafkastore",
        ),
        postgres_standby=PostgresFiles(
            data_dir=tmp_path / "standby" / "data",
            bindir=Path("/usr/bin"),
            url="postgresql://postgres@127.0.0.1:15433/kafkastore",
        ),
    )

    manifest.write(tmp_path / FILE_NAME)

    assert Manifest.load(tmp_path / FILE_NAME) == manifest
    doc = json.loads((tmp_path / FILE_NAME).read_text())
    assert doc["database_url"] == url
    assert doc["postgres_standby"]["url"].endswith(":15433/kafkastore")
    assert manifest.exports()["KAFKASTORE_DATABASE_URL"] == url


def test_a_missing_manifest_is_none_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    assert Manifest.load(tmp_path / FILE_NAME) is None

    (tmp_path / FILE_NAME).write_text('{"kafka": "127.0.0.1:9092"}')
    with pytest.raises(ConfigurationError, match="is not a dev stack manifest"):
        Manifest.load(tmp_path / FILE_NAME)

    (tmp_path / FILE_NAME).write_text("{not json")
    with pytest.raises(ConfigurationError, match="is not a dev stack manifest"):
        Manifest.load(tmp_path / FILE_NAME)


def test_dev_env_prints_the_exports_of_the_running_stack(tmp_path: Path) -> None:
    _manifest(tmp_path).write(tmp_path / FILE_NAME)

    done = subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", "dev", "env"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=child_environment({"KAFKASTORE_DEV_HOME": str(tmp_path)}),
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "export KAFKASTORE_KAFKA=127.0.0.1:19092",
        "export KAFKASTORE_DATABASE_URL=postgresql://postgres@127.0.0.1:15432/kafkastore",
        "export KAFKASTORE_TOPIC=events",
        "export KAFKASTORE_API_URL=http://127.0.0.1:18080",
    ]
