"""Subscription: filters, dead letters, exactly-once projections, asyncio, metrics, config."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from consumers import PostgresProjection, RetryPolicy, Subscription
from consumers.aio import AsyncSubscription
from consumers.dlq import dlq_topic
from dev.process import child_environment
from kafkastore import pg
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent
from tests.support.names import unique
from tests.support.process import settings_environment
from tests.support.wire import ManualWriter


def eventually(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def test_a_subscription_delivers_real_events_of_the_wanted_categories_and_types_only(
    settings: Settings, writer: ManualWriter
) -> None:
    cat, other = (unique(prefix).replace("-", "") for prefix in ("Order", "Invoice"))
    order = f"{cat}-1"
    wanted = writer.append(order, [("Placed", {"n": 1}), ("Noted", {}), ("Paid", {"n": 2})])
    writer.append(f"{other}-1", [("Placed", {"n": 3})])
    writer.phantom_aborted(order, [("Paid", {"ghost": True})])
    last = writer.append(order, [("Paid", {"n": 4})])
    seen: list[RecordedEvent] = []
    with Subscription(
        unique("group"),
        seen.append,
        categories=[cat],
        event_types=["Placed", "Paid"],
        settings=settings,
    ).start() as sub:
        eventually(lambda: len(seen) >= 3 and sub.stats()["phantoms"] >= 1)
    assert [(e.stream_id, e.version, e.type) for e in seen] == [
        (order, 1, "Placed"),
        (order, 3, "Paid"),
        (order, 4, "Paid"),
    ]
    assert [e.id for e in seen] == [wanted[0].event_id, wanted[2].event_id, last[0].event_id]
    assert seen[0].data == {"n": 1} and seen[0].raw == b'{"n":1}' and seen[0].category == cat


def test_a_poison_event_is_dead_lettered_with_its_headers_while_later_events_still_flow(
    settings: Settings, writer: ManualWriter
) -> None:
    stream = unique("Order")
    produced = writer.append(stream, [("Placed", {}), ("Poison", {"bad": 1}), ("Paid", {})])
    group = unique("group")
    handled: list[str] = []
    attempts: list[int] = []

    def handler(event: RecordedEvent) -> None:
        if event.type == "Poison":
            attempts.append(event.version)
            raise ValueError("cannot digest this")
        handled.append(event.type)

    with Subscription(
        group, handler, settings=settings, retry=RetryPolicy(attempts=3, backoff=0.01)
    ).start() as sub:
        eventually(lambda: len(handled) == 2)
        stats = sub.stats()
    assert handled == ["Placed", "Paid"]
    assert attempts == [2, 2, 2]
    assert stats["dead_letters"] == 1 and stats["retries"] == 2

    letters = _read_all(settings, dlq_topic(settings.topic), count=1)
    (letter,) = letters
    headers = dict(letter.headers() or [])
    assert letter.key() == stream.encode()
    assert letter.value() == b'{"bad":1}'
    assert headers["ce_id"] == str(produced[1].event_id).encode()
    assert headers["ce_pgwrite"] == str(produced[1].write_id).encode()
    assert headers["kafkastore_group"] == group.encode()
    assert headers["kafkastore_attempts"] == b"3"
    assert headers["kafkastore_error"] == b"ValueError: cannot digest this"


def _read_all(settings: Settings, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


class Balances(PostgresProjection):
    """Test projection: the sum of ``amount`` per stream, in a table named per test."""

    def __init__(self, table: str, fail_first: set[int] | None = None) -> None:
        self.table = table
        self.fail_first = fail_first or set()
        self.failed: set[int] = set()

    def setup(self, conn: psycopg.Connection) -> None:
        conn.execute(
            psycopg.sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (stream_id text PRIMARY KEY, total bigint, n int)"
            ).format(psycopg.sql.Identifier(self.table))
        )

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO {} AS t VALUES (%s, %s, 1) ON CONFLICT (stream_id) "
                "DO UPDATE SET total = t.total + excluded.total, n = t.n + 1"
            ).format(psycopg.sql.Identifier(self.table)),
            (event.stream_id, event.data["amount"]),
        )
        if event.version in self.fail_first and event.version not in self.failed:
            # Fails after writing: the savepoint must undo the write before the retry.
            self.failed.add(event.version)
            raise RuntimeError("transient")


def test_a_postgres_projection_applies_every_event_once_and_keeps_its_position_in_postgres(
    settings: Settings, writer: ManualWriter, database_url: str
) -> None:
    stream = unique("Acct")
    produced = writer.append(stream, [("Deposited", {"amount": a}) for a in (1, 2, 4, 8)])
    writer.phantom_committed_xid(stream, [("Deposited", {"amount": 1000})])
    table = unique("balances").replace("-", "_")
    group = unique("group")
    projection = Balances(table, fail_first={2})
    with Subscription(
        group, projection, settings=settings, retry=RetryPolicy(backoff=0.01)
    ).start() as sub:
        eventually(lambda: sub.stats()["delivered"] == 4 and sub.stats()["phantoms"] == 1)
    more = writer.append(stream, [("Deposited", {"amount": 16})])
    # A second run of the same group continues from the position stored in PostgreSQL.
    with Subscription(group, Balances(table), settings=settings).start() as sub:
        eventually(lambda: sub.stats()["delivered"] == 1)
    with pg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            psycopg.sql.SQL("SELECT total, n FROM {} WHERE stream_id = %s").format(
                psycopg.sql.Identifier(table)
            ),
            (stream,),
        ).fetchone()
        stored = conn.execute(
            "SELECT partition, next_offset FROM subscription_checkpoints WHERE group_id = %s "
            "AND next_offset > 0",
            (group,),
        ).fetchall()
    assert row == (31, 5)
    assert (produced[0].partition, more[0].offset + 1) in stored


def test_an_async_subscription_awaits_a_coroutine_handler_per_event(
    settings: Settings, writer: ManualWriter
) -> None:
    stream = unique("Cart")
    produced = writer.append(stream, [("Added", {"i": i}) for i in range(5)])
    seen: list[int] = []

    async def main() -> None:
        sub: AsyncSubscription

        async def handler(event: RecordedEvent) -> None:
            await asyncio.sleep(0)
            seen.append(event.version)
            if len(seen) == 5:
                sub.stop()

        sub = AsyncSubscription(unique("group"), handler, settings=settings)
        await asyncio.wait_for(sub.run(handle_signals=False), timeout=120)

    asyncio.run(main())
    assert seen == [p.version for p in produced]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stats_and_prometheus_metrics_report_positions_lag_and_counts(
    settings: Settings, writer: ManualWriter
) -> None:
    stream = unique("Order")
    produced = writer.append(stream, [("Placed", {}), ("Paid", {})])
    writer.malformed(stream)
    port = _free_port()
    group = unique("group")
    with Subscription(group, lambda e: None, settings=settings, metrics_port=port).start() as sub:
        eventually(lambda: sub.stats()["events"] == 2 and sub.stats()["phantoms"] == 1)
        eventually(lambda: sub.stats()["lag"] == 0)
        stats = sub.stats()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        from consumers import metrics

        server, _thread = metrics._servers[port]
        assert server.server_address[0] == "127.0.0.1"  # loopback unless metrics_host says so
    text = body.decode()
    partition = produced[0].partition
    assert stats["partitions"][partition]["position"] == produced[-1].offset + 2
    assert stats["partitions"][partition]["lag"] == 0
    labels = f'group="{group}",partition="{partition}",topic="{settings.topic}"'
    assert f"kafkastore_subscription_events_total{{{labels}}} 2.0" in text
    assert f"kafkastore_subscription_phantoms_total{{{labels}}} 1.0" in text
    assert f"kafkastore_subscription_lag{{{labels}}} 0.0" in text
    assert (
        f'kafkastore_subscription_delivered_total{{group="{group}",topic="{settings.topic}"}} 2.0'
        in text
    )


def test_a_subscription_takes_its_configuration_from_kafkastore_environment_variables(
    settings: Settings, writer: ManualWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    stream = unique("Env")
    writer.append(stream, [("Happened", {})])
    seen: list[RecordedEvent] = []
    with Subscription(unique("group"), seen.append).start() as sub:
        eventually(lambda: len(seen) == 1)
    assert sub.settings.topic == settings.topic
    assert seen[0].stream_id == stream


def test_kafkastore_tail_prints_one_line_per_event_and_exits_cleanly_on_ctrl_c(
    settings: Settings, writer: ManualWriter
) -> None:
    category = unique("Tail").replace("-", "")
    stream = f"{category}-1"
    produced = writer.append(stream, [("Opened", {"n": 1}), ("Noted", {}), ("Closed", {"n": 2})])
    writer.append(unique("Other"), [("Opened", {})])
    writer.phantom_aborted(stream, [("Closed", {"ghost": True})])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kafkastore.cli",
            "tail",
            "--from-beginning",
            "--category",
            category,
            "--type",
            "Opened",
            "--type",
            "Closed",
        ],
        env=child_environment(settings_environment(settings)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(2)]
        proc.send_signal(signal.SIGINT)
        rest, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first, last = produced[0], produced[2]
    assert lines == [
        f'{first.partition}/{first.offset} {stream} v1 Opened {{"n":1}}',
        f'{last.partition}/{last.offset} {stream} v3 Closed {{"n":2}}',
    ]
    assert rest == ""
    assert proc.returncode == 0, errors


class KillsItsConnectionOnce(Balances):
    """Fails like a PostgreSQL outage (its session is terminated) on the first event."""

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        super().handle(conn, event)
        if not self.failed:
            self.failed.add(event.version)
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def test_a_postgresql_outage_is_waited_out_without_dead_letters_or_double_application(
    settings: Settings, writer: ManualWriter, database_url: str
) -> None:
    stream = unique("Acct")
    writer.append(stream, [("Deposited", {"amount": a}) for a in (1, 2, 4)])
    table = unique("balances").replace("-", "_")
    projection = KillsItsConnectionOnce(table)
    with Subscription(
        unique("group"), projection, settings=settings, retry=RetryPolicy(backoff=0.01)
    ).start() as sub:
        eventually(lambda: _balance(database_url, table, stream) == (7, 3))
        stats = sub.stats()
    assert projection.failed == {1}
    assert stats["dead_letters"] == 0


def _balance(database_url: str, table: str, stream: str) -> tuple[int, int] | None:
    with pg.connect(database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute(
            psycopg.sql.SQL("SELECT total, n FROM {} WHERE stream_id = %s").format(
                psycopg.sql.Identifier(table)
            ),
            (stream,),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else None
