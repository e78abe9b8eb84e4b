"""Consumer groups across processes: SIGKILL mid-stream, rebalances, exactly-once totals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import TopicPartition
from psycopg import sql

from dev.process import child_environment
from kafkastore import kafka, pg
from kafkastore.config import Settings
from tests.support.names import unique
from tests.support.process import settings_environment
from tests.support.wire import ManualWriter, Produced

pytestmark = pytest.mark.slow


class Worker:
    """``python -m tests.consumers.worker`` in its own process group."""

    def __init__(self, settings: Settings, out: Path, log: Path, *args: str) -> None:
        self.out = out
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.consumers.worker", *args, str(out)],
            env=child_environment(settings_environment(settings)),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[tuple[int, str, int, str]]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            pid, stream, version, event_id = line.split()
            if int(pid) == self.pid:
                out.append((int(pid), stream, int(version), event_id))
        return out

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(settings: Settings, *args: str) -> Worker:
        n = len(started)
        w = Worker(settings, tmp_path / "delivered.txt", tmp_path / f"worker-{n}.log", *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def eventually(predicate: Callable[[], bool], timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def _write_round(writer: ManualWriter, streams: list[str], per_stream: int) -> list[Produced]:
    produced: list[Produced] = []
    for i in range(per_stream):
        for s in streams:
            produced += writer.append(s, [("Deposited", {"amount": i + 1})])
    return produced


def test_a_group_of_two_processes_delivers_every_committed_event_when_one_is_killed(
    make_settings: Callable[..., Settings], workers: Callable[..., Worker]
) -> None:
    settings = make_settings(partitions=6)
    group = unique("group")
    streams = [unique("Acct") for _ in range(24)]
    with ManualWriter(settings) as writer:
        produced = _write_round(writer, streams, 10)
        writer.phantom_aborted(streams[0], [("Deposited", {"amount": -1})])
        writer.phantom_committed_xid(streams[1], [("Deposited", {"amount": -1})])
        a = workers(settings, "alo", group)
        b = workers(settings, "alo", group)
        # Keep events coming until both members delivered some (both hold partitions).
        deadline = time.monotonic() + 120
        while len(a.lines()) < 20 or len(b.lines()) < 1:
            assert time.monotonic() < deadline, "both members deliver"
            produced += _write_round(writer, streams, 1)
        a.kill()
        produced += _write_round(writer, streams, 5)
        _, forged = writer.phantom_forged(streams[2], ("Deposited", {"amount": 1}))
        produced.append(_)
    wanted = {str(p.event_id) for p in produced}
    eventually(
        lambda: wanted <= {line[3] for line in a.lines() + b.lines()},
        what="every committed event delivered",
    )
    assert b.stop() == 0
    delivered = a.lines() + b.lines()
    # Phantoms never reach a handler.
    assert {line[3] for line in delivered} == wanted
    assert str(forged.event_id) not in {line[3] for line in delivered}
    # Per-stream order in each process: a stream's next delivery is never ahead of the one
    # after the previous (re-deliveries after the kill may go back, never skip or reorder),
    # unless its partition was handed to the other process meanwhile and came back (a
    # rebalance while both join): then the other one delivered the versions in between.
    for worker, other in ((a, b), (b, a)):
        theirs = {(stream, version) for _pid, stream, version, _id in other.lines()}
        last: dict[str, int] = {}
        for _pid, stream, version, _id in worker.lines():
            if stream in last and version > last[stream] + 1:
                between = {(stream, v) for v in range(last[stream] + 1, version)}
                assert between <= theirs, (stream, last[stream], version)
            last[stream] = version
    versions: dict[str, set[int]] = defaultdict(set)
    for _pid, stream, version, _id in delivered:
        versions[stream].add(version)
    for s in streams:
        assert versions[s] == {p.version for p in produced if p.stream_id == s}


def _delivered_by(worker: Worker, event_id: str) -> Callable[[], bool]:
    return lambda: event_id in {line[3] for line in worker.lines()}


RESUME_WITHIN = 10.0
"""Seconds from the restart of a killed subscription process until it delivers a new event."""


@pytest.mark.parametrize("mode", ["alo", "eo"])
def test_a_subscription_process_killed_and_restarted_delivers_new_events_within_seconds(
    make_settings: Callable[..., Settings], workers: Callable[..., Worker], mode: str
) -> None:
    settings = make_settings()
    group = unique("group")
    table = unique("totals").replace("-", "_")
    args = ("eo", group, table) if mode == "eo" else ("alo", group)
    stream = unique("Acct")
    with ManualWriter(settings) as writer:
        writer.append(stream, [("Deposited", {"amount": 1})])
        worker = workers(settings, *args)
        eventually(lambda: bool(worker.lines()), timeout=60.0, what="first delivery")
        for _ in range(2):
            worker.kill()
            worker = workers(settings, *args)  # the default session timeout (45 s)
            started = time.monotonic()
            new = writer.append(stream, [("Deposited", {"amount": 1})])[0]
            eventually(
                _delivered_by(worker, str(new.event_id)),
                timeout=RESUME_WITHIN,
                what="the restarted process delivers a new event",
            )
            assert time.monotonic() - started < RESUME_WITHIN
    if mode == "eo":
        # Exactly once across both kills: three deposits, counted three times.
        with pg.connect(settings.database_url, autocommit=True) as conn:
            row = conn.execute(
                sql.SQL("SELECT total, n FROM {} WHERE stream_id = %s").format(
                    sql.Identifier(table)
                ),
                (stream,),
            ).fetchone()
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        assert row is not None and (int(row[0]), int(row[1])) == (3, 3)


def test_exactly_once_projection_totals_are_exact_after_a_kill_and_a_rebalance(
    make_settings: Callable[..., Settings],
    workers: Callable[..., Worker],
    database_url: str,
) -> None:
    settings = make_settings(partitions=6)
    group = unique("group")
    table = unique("totals").replace("-", "_")
    streams = [unique("Acct") for _ in range(24)]
    with ManualWriter(settings) as writer:
        produced = _write_round(writer, streams, 5)
        a = workers(settings, "eo", group, table)
        eventually(lambda: len(a.lines()) >= 20, what="first worker applies events")
        b = workers(settings, "eo", group, table)  # a rebalance
        # Keep events coming until the second worker has applied some of them.
        deadline = time.monotonic() + 120
        while len(b.lines()) < 10:
            assert time.monotonic() < deadline, "second worker applies events"
            produced += _write_round(writer, streams, 1)
        a.kill()
        writer.phantom_aborted(streams[0], [("Deposited", {"amount": 1000})])
        produced += _write_round(writer, streams, 3)
        c = workers(settings, "eo", group, table)  # another rebalance
        produced += _write_round(writer, streams, 3)
    ends = _high_watermarks(settings)
    eventually(
        # A partition without events has no checkpoint row yet (rows start with a batch).
        lambda: (
            {p: _stored_offsets(database_url, group, settings.topic).get(p, 0) for p in ends}
            == ends
        ),
        what="checkpoints reach the end of every partition",
    )
    assert b.stop() == 0 and c.stop() == 0
    expected: dict[str, tuple[int, int]] = {}
    for p in produced:
        total, n = expected.get(p.stream_id, (0, 0))
        expected[p.stream_id] = (total + p.data["amount"], n + 1)
    with pg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT stream_id, total, n FROM {}").format(sql.Identifier(table))
        ).fetchall()
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    assert {s: (int(t), int(n)) for s, t, n in rows} == expected


def _high_watermarks(settings: Settings) -> dict[int, int]:
    consumer = kafka.consumer(settings, unique("probe"))
    try:
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(settings.topic, p), 10)[1])
            for p in range(settings.partitions)
        }
    finally:
        consumer.close()


def _stored_offsets(database_url: str, group: str, topic: str) -> dict[int, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT partition, next_offset FROM subscription_checkpoints "
            "WHERE group_id = %s AND topic = %s",
            (group, topic),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}
