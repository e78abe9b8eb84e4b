"""``kafkastore stream metadata`` and ``kafkastore scavenge`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import orjson

from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.support import settings_environment, unique


def kafkastore(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", *args],
        env={**settings_environment(settings), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_stream_metadata_shows_and_sets_fields_keeping_the_others(settings: Settings) -> None:
    stream = unique("Cli")
    shown = kafkastore(settings, "stream", "metadata", stream)
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["metadata_version"] == 0

    first = kafkastore(
        settings, "stream", "metadata", stream, "--set", "max_count=5", "--set", 'custom={"a":1}'
    )
    second = kafkastore(settings, "stream", "metadata", stream, "--set", "max_age=60")

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    body = orjson.loads(second.stdout)
    assert (body["metadata_version"], body["max_count"], body["max_age"], body["custom"]) == (
        2,
        5,
        60,
        {"a": 1},
    )
    bad = kafkastore(settings, "stream", "metadata", stream, "--set", "max_count=0")
    assert bad.returncode == 2 and "max_count must be at least 1" in bad.stderr
    unset = kafkastore(settings, "stream", "metadata", stream, "--set", "max_count=")
    assert orjson.loads(unset.stdout)["max_count"] is None


def test_scavenge_removes_what_is_hidden_and_prints_a_summary(settings: Settings) -> None:
    stream = unique("Cli")
    with EventStore(settings) as store:
        store.append(stream, [NewEvent(type="E") for _ in range(3)])
        store.delete_stream(stream)
    done = kafkastore(settings, "scavenge")
    assert done.returncode == 0, done.stderr
    assert "scavenged" in done.stdout and "rows/s" in done.stdout
