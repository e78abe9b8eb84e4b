"""Failures injected at each step of the append protocol (docs/design.md section 2).

Each test asserts the protocol's promise: the head is unchanged, the events that reached Kafka
have no marker and the verdict rule calls them phantoms, and a retry with the same event ids
succeeds exactly once.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from kafkastore import kafka, pg
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import OutcomeUnknown, Unavailable
from kafkastore.records import AppendRequest, NewEvent
from kafkastore.verdict import Verdict, VerdictResolver
from tests.support import settings_environment, unique
from tests.writer.topic_reader import read_topic
from writer import faults
from writer.protocol import APPLICATION_NAME

pytestmark = pytest.mark.slow

FAST_LADDER = {
    "lock_timeout": 1.0,
    "delivery_timeout": 3.0,
    "statement_timeout": 4.0,
    "idle_in_transaction_timeout": 6.0,
    "commit_resolve_timeout": 8.0,
}


def new_events(n: int) -> list[NewEvent]:
    return [NewEvent(type="Tried", data={"i": i}, id=uuid.uuid4()) for i in range(n)]


def head(settings: Settings, stream: str) -> int:
    with pg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT version FROM streams WHERE stream_id = %s", (stream,)).fetchone()
    return 0 if row is None else int(row[0])


def verdicts(settings: Settings, streams: Sequence[str]) -> list[tuple[uuid.UUID, Verdict]]:
    """Every message of these streams on the topic, judged (waiting while writers run)."""
    messages = [m for m in read_topic(settings) if m.stream_id in streams]
    with pg.connect(settings.database_url, autocommit=True) as conn:
        resolver = VerdictResolver(pg.system_identifier(conn))
        judged = resolver.judge_until_settled(conn, messages, timeout=30)
    return [(m.event_id, j.verdict) for m, j in zip(messages, judged, strict=True)]


def assert_protocol_held(
    settings: Settings, appends: dict[str, list[NewEvent]], heads_before: dict[str, int]
) -> None:
    for stream, before in heads_before.items():
        assert head(settings, stream) == before, f"the head of {stream} moved"
    tried = {e.id for evs in appends.values() for e in evs}
    reached = [(i, v) for i, v in verdicts(settings, list(appends)) if i in tried]
    assert all(v is Verdict.PHANTOM for _, v in reached), reached
    # The retry with the same ids succeeds exactly once; its repeat is answered idempotently.
    requests = [AppendRequest(s, tuple(evs), "any") for s, evs in appends.items()]
    with EventStore(settings) as store:
        first = store.append_many(requests)
        second = store.append_many(requests)
    assert all(r.created for r in first) and not any(r.created for r in second)
    assert [r.events for r in first] == [r.events for r in second]
    for result in first:
        assert result.from_version == heads_before[result.stream_id] + 1
    real = [
        (i, v) for i, v in verdicts(settings, list(appends)) if v is Verdict.REAL and i in tried
    ]
    expected_ids = sorted(str(e.id) for evs in appends.values() for e in evs)
    assert sorted(str(i) for i, _ in real) == expected_ids  # each event real exactly once


def test_a_writer_killed_after_its_acks_and_before_commit_leaves_only_phantoms(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**FAST_LADDER)
    stream = unique("Killed")
    with EventStore(settings) as store:
        store.append(stream, new_events(2))
    events = new_events(3)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.writer.kill_after_acks",
            "acked",
            stream,
            *(str(e.id) for e in events),
        ],
        env={**os.environ, **settings_environment(settings)},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert len(verdicts(settings, [stream])) == 5  # two real, three produced by the dead writer
    assert_protocol_held_after_kill(settings, stream, events)


def assert_protocol_held_after_kill(
    settings: Settings, stream: str, events: list[NewEvent]
) -> None:
    assert head(settings, stream) == 2
    judged = dict(verdicts(settings, [stream]))
    assert [judged[e.id] for e in events] == [Verdict.PHANTOM] * 3
    assert_protocol_held(settings, {stream: events}, {stream: 2})


def set_max_message_bytes(settings: Settings, value: int) -> None:
    admin = kafka.admin(settings)
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        settings.topic,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(30)
    time.sleep(1)  # the broker applies topic configs asynchronously


def test_a_delivery_failure_mid_batch_rolls_the_whole_atomic_append_back(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**FAST_LADDER)
    # The broker refuses messages over 2000 bytes on this topic: one event of the batch fails
    # while the others (on other partitions) are delivered.
    set_max_message_bytes(settings, 2000)
    small, other = unique("Small"), unique("Big")
    good = new_events(2)
    # Random bytes: compression must not shrink the event under the limit.
    blob = base64.b64encode(os.urandom(6000)).decode()
    big = [NewEvent(type="Huge", data={"blob": blob}, id=uuid.uuid4())]
    with EventStore(settings) as store, pytest.raises(Unavailable) as info:
        store.append_many([AppendRequest(small, tuple(good)), AppendRequest(other, tuple(big))])
    assert info.value.retriable and not info.value.outcome_unknown
    assert head(settings, small) == 0 and head(settings, other) == 0
    landed = verdicts(settings, [small, other])
    assert {i for i, _ in landed} <= {e.id for e in good}
    assert all(v is Verdict.PHANTOM for _, v in landed)
    # Once the topic accepts the event, the same ids go through exactly once.
    set_max_message_bytes(settings, 1048588)
    assert_protocol_held(settings, {small: good, other: big}, {small: 0, other: 0})


def test_a_commit_that_fails_after_all_acks_is_rolled_back_and_retryable(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**FAST_LADDER)
    stream = unique("CommitLost")

    armed: list[bool] = []

    def terminate_writer(step: str) -> None:
        if step == "before_commit" and armed:
            with pg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND state LIKE 'idle in transaction%%'",
                    (APPLICATION_NAME,),
                )

    events = new_events(2)
    with faults.injected(terminate_writer), EventStore(settings) as store:
        store.append(stream, [NewEvent(type="First", data={})])
        armed.append(True)
        with pytest.raises(Unavailable) as info:
            store.append(stream, events)
    assert not info.value.outcome_unknown  # settled through the marker: it aborted
    assert_protocol_held(settings, {stream: events}, {stream: 1})


def test_a_postgresql_crash_while_the_writer_waits_for_acks_loses_nothing_acknowledged(
    make_settings: Callable[..., Settings], session_services: Any
) -> None:
    from dev import postgres
    from kafkastore import schema

    tmp_path = session_services.workdir / unique("crash")

    cluster = postgres.start(tmp_path / "pg")
    try:
        schema.migrate(cluster.database_url)
        settings = make_settings(database_url=cluster.database_url, **FAST_LADDER)
        stream = unique("Crash")
        restarted: list[Any] = []

        def crash(step: str) -> None:
            if step == "produced" and not restarted:
                os.kill(cluster.pid, signal.SIGQUIT)  # immediate shutdown: no checkpoint
                deadline = time.monotonic() + 30
                while (cluster.data_dir / "postmaster.pid").exists():
                    assert time.monotonic() < deadline, "postgres did not stop"
                    time.sleep(0.05)
                restarted.append(postgres.start(tmp_path / "pg", port=cluster.port))

        with EventStore(settings) as store:
            store.append(stream, [NewEvent(type="Before", data={})])
        events = new_events(2)
        with faults.injected(crash), EventStore(settings) as store, pytest.raises(Unavailable):
            store.append(stream, events)
        assert restarted
        assert_protocol_held(settings, {stream: events}, {stream: 1})
    finally:
        for c in (cluster, *locals().get("restarted", [])):
            postgres.stop(c)
        postgres.remove(tmp_path / "pg")  # as root its files live outside tmp_path


def test_a_commit_whose_reply_is_lost_is_answered_as_committed(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # The writer talks to PostgreSQL through a proxy that forwards one COMMIT and drops the
    # connection before the reply reaches the writer: the real commit path must settle it
    # through the marker on a fresh connection.
    from tests.support.proxy import LossyProxy

    caplog.set_level(logging.INFO, logger="kafkastore.writer")
    direct = make_settings(**FAST_LADDER)
    stream = unique("ReplyLost")
    events = new_events(2)
    with LossyProxy(direct.database_url) as proxy:
        with EventStore(direct.replace(database_url=proxy.url)) as store:
            store.append(stream, [NewEvent(type="First", data={})])
            proxy.lose_next_commit_reply()
            result = store.append(stream, events)
        assert proxy.tripped.is_set()
    assert any("had committed" in r.getMessage() for r in caplog.records)
    assert result.created and (result.from_version, result.to_version) == (2, 3)
    assert [e.id for e in result.events] == [e.id for e in events]
    assert head(direct, stream) == 3
    judged = verdicts(direct, [stream])
    real = sorted(str(i) for i, v in judged if v is Verdict.REAL and i in {e.id for e in events})
    assert real == sorted(str(e.id) for e in events)  # each event real exactly once
    with EventStore(direct) as store:
        again = store.append(stream, events)
    assert not again.created and again.events == result.events


def test_a_lost_commit_reply_is_settled_through_the_marker(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.support.wire import ManualWriter
    from writer.protocol import resolve_commit

    settings = make_settings(commit_resolve_timeout=1.0)

    with ManualWriter(settings) as writer:
        (committed,) = writer.append(unique("Lost"), [("A", {})])
        with pg.connect(settings.database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xid::text FROM appends WHERE write_id = %s", (committed.write_id,)
            ).fetchone()
        assert row is not None
        assert resolve_commit(settings, committed.write_id, int(row[0])) is True
        (aborted,) = writer.phantom_aborted(unique("Lost"), [("A", {})])
        aborted_xid = next(m.xid for m in read_topic(settings) if m.event_id == aborted.event_id)
        assert resolve_commit(settings, aborted.write_id, aborted_xid) is False
        with writer.pending(unique("Lost"), [("A", {})]) as running:
            running_xid = next(
                m.xid for m in read_topic(settings) if m.event_id == running[0].event_id
            )
            with pytest.raises(OutcomeUnknown):
                resolve_commit(settings, running[0].write_id, running_xid)
