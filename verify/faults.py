"""The process-level faults (issue 13, item 4): brokers, services and PostgreSQL crashing.

Each is a :class:`verify.nemesis.Nemesis` over an :class:`verify.environment.Environment`:

- :class:`KillLeader` - SIGKILL of the node leading a hot stream's partition, restarted at heal;
- :class:`PauseBroker` - SIGSTOP of that leader for longer than the writer's delivery timeout
  (``message.timeout.ms``), then SIGCONT;
- :class:`KillIndexer` / :class:`KillConsumer` - SIGKILL of ``kafkastore indexer`` / of the
  exactly-once projection's process, restarted with default settings; each notes how long after
  the restart it was working again (static membership: no wait for the session timeout);
- :class:`Rebalance` - a second member joins the projection's group while the first is mid-batch,
  and leaves again at heal; what it costs shows in the projection's deliveries (the report's
  *deliveries recovered*), not in the tail, which reads the index;
- :class:`CrashPostgres` - ``synchronous_commit=off`` and the WAL writer stopped, then SIGKILL
  of the postmaster and every backend: the commits of the hold are lost (acknowledged loss,
  allowed by that setting and reported apart), and their xids are handed out again after
  recovery (measured from the writer's messages) - the verdict by marker must still never show
  a phantom.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from dev import postgres
from dev.process import wait_gone
from kafkastore import pg
from kafkastore.client import EventStore
from kafkastore.errors import KafkaStoreError
from verify import sql, xids
from verify.environment import Environment, kill_all, partition_leader, pids_of_cluster
from verify.nemesis import FaultContext

logger = logging.getLogger("kafkastore.verify")

RESUME_TIMEOUT = 120.0
RESTART_TIMEOUT = 300.0
CATCH_UP_TIMEOUT = 120.0
"""How long the rebalance's heal waits for the projection to deliver what the index held."""


def hot_partition(env: Environment, ctx: FaultContext) -> int:
    """The partition of one hot stream (drawn at random), as the index says."""
    stream = ctx.rng.choice(ctx.hot_streams)
    with EventStore(env.settings) as reader:
        for _ in range(100):
            try:
                page = reader.read_stream(stream, from_version=1, limit=1)
                if page.events:
                    return page.events[0].partition
            except KafkaStoreError:
                pass
            time.sleep(0.2)
    return 0


class KillLeader:
    """SIGKILL the leader of a hot stream's partition; restart it at heal."""

    name = "kill-partition-leader"
    hold: tuple[float, float] = (3.0, 8.0)
    loses_acknowledged = False

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.victim: int | None = None

    def inject(self, ctx: FaultContext) -> None:
        partition = hot_partition(self.env, ctx)
        self.victim = partition_leader(self.env.settings, partition)
        ctx.note("partition", partition)
        ctx.note("victim", self.victim)
        killed = time.monotonic()
        self.env.cluster.kill(self.victim)
        for _ in range(300):
            try:
                if partition_leader(self.env.settings, partition) not in (self.victim, -1):
                    ctx.note("leader_moved_s", round(time.monotonic() - killed, 3))
                    break
            except KafkaStoreError:
                pass
            time.sleep(0.1)

    def heal(self, ctx: FaultContext) -> None:
        if self.victim is not None:
            started = time.monotonic()
            # Generous: on a loaded machine a JVM takes long to start and to recover its logs.
            self.env.cluster.restart(self.victim, timeout=RESTART_TIMEOUT)
            ctx.note("restart_s", round(time.monotonic() - started, 3))


class PauseBroker:
    """SIGSTOP the leader of a hot stream's partition past the delivery timeout; SIGCONT."""

    name = "pause-partition-leader"
    loses_acknowledged = False

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.victim: int | None = None
        timeout = env.settings.delivery_timeout
        self.hold = (timeout + 2.0, timeout + 5.0)

    def inject(self, ctx: FaultContext) -> None:
        partition = hot_partition(self.env, ctx)
        self.victim = partition_leader(self.env.settings, partition)
        ctx.note("partition", partition)
        ctx.note("victim", self.victim)
        proc = self.env.cluster.node(self.victim).proc
        if proc is not None:
            proc.send_signal(signal.SIGSTOP)

    def heal(self, ctx: FaultContext) -> None:
        if self.victim is not None:
            proc = self.env.cluster.node(self.victim).proc
            if proc is not None:
                proc.send_signal(signal.SIGCONT)


def _index_head(env: Environment) -> int:
    with EventStore(env.settings) as reader:
        position = 0
        while True:
            page = reader.read_all(from_position=position + 1, limit=10_000)
            if not page.events:
                return position
            position = int(page.events[-1].global_position or position)


def _delivered(env: Environment) -> int:
    with pg.translated(), pg.connect(env.settings.database_url, autocommit=True) as conn:
        row = conn.execute(sql.DELIVERED_COUNT).fetchone()
        return int(row[0]) if row else 0


def _wait_growth(read: object, before: int, *, timeout: float = RESUME_TIMEOUT) -> float | None:
    """Seconds until ``read()`` exceeds ``before`` (None: not within ``timeout``)."""
    assert callable(read)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if read() > before:
                return round(time.monotonic() - started, 3)
        except KafkaStoreError:
            pass
        time.sleep(0.1)
    return None


class _KillService:
    """SIGKILL a service process; restart it (default settings) at heal and time its resumption."""

    name = "kill-service"
    service = ""
    hold: tuple[float, float] = (0.5, 2.0)
    loses_acknowledged = False

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.killed_at = 0.0

    def progress(self) -> int:
        raise NotImplementedError

    def inject(self, ctx: FaultContext) -> None:
        self.env.services[self.service].kill()
        self.killed_at = time.monotonic()

    def heal(self, ctx: FaultContext) -> None:
        service = self.env.services[self.service]
        if service.running:
            return
        before = self.progress()
        service.start()
        resumed = _wait_growth(self.progress, before)
        ctx.note("resumed_after_restart_s", resumed)
        if resumed is not None:
            ctx.note("resumed_after_kill_s", round(time.monotonic() - self.killed_at, 3))


class KillIndexer(_KillService):
    """SIGKILL ``kafkastore indexer``; restart it. Notes when ``$all`` grew again."""

    name = "kill-indexer"
    service = "indexer"

    def progress(self) -> int:
        return _index_head(self.env)


class KillConsumer(_KillService):
    """SIGKILL the exactly-once projection's process; restart it. Notes when it delivered
    again."""

    name = "kill-consumer"
    service = "consumer"

    def progress(self) -> int:
        return _delivered(self.env)


class Rebalance:
    """A second member joins the projection's group mid-batch; it leaves (SIGTERM) at heal.

    The index is not involved, so the fault's row measures the projection: *deliveries
    recovered* (:attr:`verify.verdict.PhaseReport.deliveries_recovered_s`, from the deliveries'
    times) is how long its deliveries stalled. A static member that leaves keeps its partitions
    until its session times out (``session.timeout.ms``, 45 s by default), so the heal waits
    until the projection has delivered everything the index held when the member left (at most
    :data:`CATCH_UP_TIMEOUT`): that stall is this fault's, not the next one's."""

    name = "rebalance"
    hold: tuple[float, float] = (4.0, 8.0)
    loses_acknowledged = False

    def __init__(self, env: Environment) -> None:
        self.env = env

    def inject(self, ctx: FaultContext) -> None:
        if "consumer-2" in self.env.services:
            self.env.services["consumer-2"].start()
        else:
            self.env.add_consumer("consumer-2")

    def heal(self, ctx: FaultContext) -> None:
        if "consumer-2" not in self.env.services:
            return
        self.env.services["consumer-2"].stop()
        left = time.monotonic()
        url = self.env.settings.database_url
        with pg.translated(), pg.connect(url, autocommit=True) as conn:
            row = conn.execute(sql.INDEX_HEAD).fetchone()
            head = int(row[0]) if row else 0
            while time.monotonic() - left < CATCH_UP_TIMEOUT:
                row = conn.execute(sql.UNDELIVERED, (head,)).fetchone()
                if row is not None and int(row[0]) == 0:
                    ctx.note("caught_up_after_leave_s", round(time.monotonic() - left, 3))
                    return
                time.sleep(0.5)
        ctx.note("not_caught_up_within_s", CATCH_UP_TIMEOUT)


def _reaped(pid: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _walwriter(pids: list[int]) -> int | None:
    """The WAL writer among a cluster's processes (its title: ``postgres: walwriter``)."""
    for pid in pids[1:]:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"walwriter" in title:
            return pid
    return None


REISSUE_TIMEOUT = 60.0
"""How long the crash waits, after recovery, for the xids it lost to be handed out again."""


class CrashPostgres:
    """A PostgreSQL crash that loses acknowledged commits, and their xids handed out again.

    At injection: ``synchronous_commit=off`` (a COMMIT returns before its WAL is flushed) and
    the WAL writer stopped (SIGSTOP), so for the hold every commit's WAL stays in shared memory;
    at heal: SIGKILL of the postmaster and every backend at once, and crash recovery. Why the WAL
    writer is stopped: with it running, SIGKILL loses next to nothing - it writes every WAL page
    to the kernel as soon as the page is full (``wal_writer_delay`` and ``wal_writer_flush_after``
    only delay the *flush*), and the kernel's page cache survives the death of the processes. A
    power loss would lose what was not flushed; stopping the writer for the hold is that loss,
    up to the hold's length of commits (with ``synchronous_commit=off`` PostgreSQL allows up to
    three ``wal_writer_delay``).

    What recovery lost - acknowledged appends (``loses_acknowledged``: that loss is what the
    setting allows, reported apart) and the xid counter set back - is measured from the writer's
    messages in Kafka (:mod:`verify.xids`): ``xid_highest_before_crash`` is the highest xid they
    carried before the restart, ``xid_next_after_recovery`` the counter just after it, and
    ``xids_handed_out_again`` the difference (every xid in between is handed out twice). Then
    the crash waits until the counter is past the highest, notes how many xids the messages of
    two transactions carried (``xids_of_two_writes``: the others went to the indexer's, the
    projection's and other transactions that produce nothing) and records those messages (an
    observation ``reissued``), so the checker proves that no reader took the lost transactions'
    messages for real: the verdict asks for the marker, not the xid."""

    name = "postgres-crash-losing-wal"
    hold: tuple[float, float] = (1.0, 3.0)
    loses_acknowledged = True

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.start_offsets: dict[int, int] = {}

    def _run(self, *statements: str) -> list[object]:
        url = self.env.postgres.database_url
        with pg.translated(), pg.connect(url, autocommit=True) as conn:
            out: list[object] = []
            for statement in statements:
                cursor = conn.execute(statement)
                row = cursor.fetchone() if cursor.description else None
                out.append(row[0] if row else None)
        return out

    def inject(self, ctx: FaultContext) -> None:
        self.start_offsets = xids.high_watermarks(self.env.settings)
        self._run(sql.SYNCHRONOUS_COMMIT_OFF, sql.RELOAD)
        walwriter = _walwriter(pids_of_cluster(self.env.postgres.data_dir))
        if walwriter is not None:
            os.kill(walwriter, signal.SIGSTOP)
        ctx.note("walwriter_stopped", walwriter is not None)

    def heal(self, ctx: FaultContext) -> None:
        # The crash is the end of the hold: what was committed since the injection is gone.
        pids = pids_of_cluster(self.env.postgres.data_dir)
        kill_all(pids)
        crashed = time.monotonic()
        ctx.note("killed_processes", len(pids))
        for pid in pids:
            wait_gone(pid, 30.0)
        # A dead postmaster not yet reaped by its parent (init) still answers kill(pid, 0), and
        # the new one would take it for a running server: wait until it is reaped, else remove
        # the lock file of the dead server (what an operator does after such a crash).
        if pids and not _reaped(pids[0], timeout=30.0):
            (self.env.postgres.data_dir / "postmaster.pid").unlink(missing_ok=True)
        cluster = self.env.postgres
        self.env.postgres = postgres.start(
            self.env.home / "postgres",
            port=cluster.port,
            log_path=cluster.log_path,
            database=cluster.database,
        )
        restarted_ms = int(time.time() * 1000)
        ctx.note("recovered_s", round(time.monotonic() - crashed, 3))
        after, _reset, _reload = self._run(sql.XMAX, sql.SYNCHRONOUS_COMMIT_RESET, sql.RELOAD)
        ctx.note("xid_next_after_recovery", int(str(after)))
        if self.start_offsets:
            self._measure_reissue(ctx, restarted_ms, int(str(after)))

    def _measure_reissue(self, ctx: FaultContext, restarted_ms: int, next_xid: int) -> None:
        scan = xids.TopicScan(self.env.settings, self.start_offsets)
        try:
            messages = scan.read()
            before = [m.xid for m in messages if m.timestamp_ms < restarted_ms]
            highest = max(before, default=0)
            ctx.note("xid_highest_before_crash", highest)
            # Every xid up to the highest was handed out before the crash; from the counter
            # after recovery on they are handed out again (at least: the counter was read after
            # the writers were back).
            ctx.note("xids_handed_out_again", max(0, highest - next_xid + 1))
            deadline = time.monotonic() + REISSUE_TIMEOUT
            while time.monotonic() < deadline:
                (xmax,) = self._run(sql.XMAX)
                if int(str(xmax)) > highest:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # the writers that took the last of them produce
            messages += scan.read()
        finally:
            scan.close()
        again = xids.reissued(messages)
        ctx.note("xids_of_two_writes", len(again))
        ctx.recorder.observe(
            "reissued",
            fault=self.name,
            messages=[
                [r.xid, str(m.write_id), str(m.event_id), m.partition, m.offset, when]
                for r in again
                for when, group in (("before", r.before), ("after", r.after))
                for m in group
            ],
        )
