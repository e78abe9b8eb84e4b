"""A long-running subscription says what it does: start, assignments, progress, stop; and it
waits out a PostgreSQL that is down when it starts, saying so, instead of exiting."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from consumers import PostgresProjection, Subscription
from consumers.progress import PROGRESS_EVERY
from dev.process import child_environment
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent
from tests.support.names import unique
from tests.support.process import settings_environment
from tests.support.proxy import LossyProxy
from tests.support.wire import ManualWriter

SCRIPT = """
import sys
from consumers import Subscription

Subscription(sys.argv[1], lambda event: None).run()
"""


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def test_run_prints_the_group_its_partitions_progress_and_totals_without_logging_setup(
    settings: Settings, writer: ManualWriter, tmp_path: Path
) -> None:
    writer.append(unique("Order"), [("Placed", {}), ("Paid", {})])
    group = unique("group")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    output = tmp_path / "stderr.txt"
    with output.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), group],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=child_environment(settings_environment(settings)),
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        wait_for(
            lambda: "events handled (" in output.read_text(),
            timeout=60 + 2 * PROGRESS_EVERY,
            what="a progress line",
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.read_text()
    assert f"subscription {group!r} started on topic {settings.topic!r} (at-least-once)" in text
    assert f"group {group!r} assigned [0, 1, 2] of {settings.topic!r}" in text
    assert f"subscription {group!r}: 2 events handled" in text
    assert f"subscription {group!r} stopped: 2 events handled" in text
    assert "Traceback" not in text


class Counted(PostgresProjection):
    def __init__(self, table: str) -> None:
        self.table = table

    def setup(self, conn: psycopg.Connection) -> None:
        conn.execute(f"CREATE TABLE {self.table} (stream_id text, version bigint)")

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        conn.execute(f"INSERT INTO {self.table} VALUES (%s, %s)", (event.stream_id, event.version))


def test_a_projection_started_while_postgresql_is_down_waits_with_a_message_then_proceeds(
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = make_settings()
    stream = unique("Order")
    with ManualWriter(real) as writer:
        writer.append(stream, [("Placed", {}), ("Paid", {})])
    # Bound, not listening: connections are refused until the proxy listens on it.
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    down = real.replace(database_url=make_conninfo(real.database_url, port=str(port)))
    table = unique("counted").replace("-", "_")
    caplog.set_level(logging.INFO, logger="kafkastore")
    sub = Subscription(unique("group"), Counted(table), settings=down)
    sub.start()
    try:
        waits = lambda: [r for r in caplog.records if "waiting for it" in r.getMessage()]  # noqa: E731
        wait_for(lambda: len(waits()) >= 2, timeout=30, what="two waiting messages")
        assert sub._thread is not None and sub._thread.is_alive() and sub.error is None
        assert "PostgreSQL" in waits()[0].getMessage() or "connect" in waits()[0].getMessage()
        with LossyProxy(real.database_url, listener=reserved):
            wait_for(lambda: sub.stats()["delivered"] == 2, timeout=60, what="both events")
            sub.stop()
            sub.join(30)
    finally:
        sub.close()
    with psycopg.connect(real.database_url) as conn:
        rows = conn.execute(f"SELECT stream_id, version FROM {table} ORDER BY version").fetchall()
        conn.execute(f"DROP TABLE {table}")
    assert rows == [(stream, 1), (stream, 2)]
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("kafkastore"))


def test_an_application_with_its_own_logging_keeps_it() -> None:
    from consumers.progress import visible_logging

    ours = logging.getLogger("kafkastore")
    before = (list(ours.handlers), ours.level)
    with visible_logging():
        # pytest's handlers on the root logger are the application's configuration here.
        assert (list(ours.handlers), ours.level) == before
