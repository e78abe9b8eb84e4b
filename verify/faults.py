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
- :class:`CrashPostgres` - ``synchronous_commit=off``, then SIGKILL of the postmaster and every
  backend: commits whose WAL was not flushed are lost (acknowledged loss, allowed by that
  setting and reported apart), and their xids are handed out again after recovery - the verdict
  by marker must still never show a phantom.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from dev import postgres
from dev.process import wait_gone
from kafkastore import pg
from kafkastore.client import EventStore
from kafkastore.errors import KafkaStoreError
from verify import sql
from verify.environment import Environment, kill_all, partition_leader, pids_of_cluster
from verify.nemesis import FaultContext

logger = logging.getLogger("kafkastore.verify")

RESUME_TIMEOUT = 120.0
RESTART_TIMEOUT = 300.0


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
    times) is how long its deliveries stalled."""

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
        if "consumer-2" in self.env.services:
            self.env.services["consumer-2"].stop()


def _reaped(pid: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class CrashPostgres:
    """``synchronous_commit=off`` under load, then SIGKILL of the whole PostgreSQL cluster and
    its crash recovery: acknowledged commits whose WAL was not flushed are lost, and their xids
    are reused. ``loses_acknowledged``: that loss is what the setting allows."""

    name = "postgres-crash-losing-wal"
    hold: tuple[float, float] = (1.0, 3.0)
    loses_acknowledged = True

    def __init__(self, env: Environment) -> None:
        self.env = env

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
        self._run(sql.SYNCHRONOUS_COMMIT_OFF, sql.RELOAD)

    def heal(self, ctx: FaultContext) -> None:
        # The crash is the end of the hold: what was committed but not flushed by then is gone.
        (before,) = self._run(sql.NEXT_XID)
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
        ctx.note("recovered_s", round(time.monotonic() - crashed, 3))
        after, _reset, _reload = self._run(sql.NEXT_XID, sql.SYNCHRONOUS_COMMIT_RESET, sql.RELOAD)
        ctx.note("next_xid_before_crash", int(str(before)))
        ctx.note("next_xid_after_recovery", int(str(after)))
        ctx.note("xids_handed_out_again", max(0, int(str(before)) - int(str(after)) + 1))
