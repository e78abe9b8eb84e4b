"""A synchronous streaming standby of a :mod:`dev.postgres` cluster on the same machine
(``kafkastore dev --pg-standby``, the fault tests' PostgreSQL failover).

The standby is made once with ``pg_basebackup -R -X stream -C -S kafkastore_standby`` (a
physical replication slot on the primary, so the primary keeps the WAL a stopped standby still
needs) and names itself ``kafkastore_standby`` in ``primary_conninfo``; the primary then gets
``synchronous_standby_names = 'kafkastore_standby'`` and ``synchronous_commit = on``, so a
COMMIT returns only once the standby has flushed its WAL: an acknowledged append survives the
loss of the primary (docs/design.md section 2, "Durability"). The standby itself has no
synchronous standby: once promoted it runs alone, as a failover manager's non-strict
synchronous mode would.

Clients reach whichever node is the primary through one multi-host ``database_url``
(:func:`multi_host_url`): libpq tries the hosts in order and keeps the first that accepts writes
(``target_session_attrs=read-write``). :func:`promote` and :func:`kill` are the failover and the
crash of the fault tests; nothing here promotes on its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from dev import postgres
from dev.postgres import PostgresCluster
from dev.process import LOCALHOST, StackError, free_port, pid_alive
from kafkastore import pg
from kafkastore.errors import Unavailable
from kafkastore.retry import Backoff

STANDBY_NAME = "kafkastore_standby"
"""The standby's ``application_name`` and replication slot."""

CONNECT_TIMEOUT = 10
"""``connect_timeout`` of the multi-host URL: libpq gives up on one host after it and tries the
next (without it, a host that drops packets holds the connect forever)."""


def multi_host_url(clusters: Sequence[PostgresCluster], *, ports: Sequence[int] = ()) -> str:
    """The ``database_url`` that reaches the primary among ``clusters`` (``ports``: the ports
    to name instead of the clusters' own, e.g. proxies in front of them)."""
    ports = list(ports) or [c.port for c in clusters]
    return (
        f"host={','.join(LOCALHOST for _ in ports)} port={','.join(str(p) for p in ports)} "
        f"user={postgres.SUPERUSER} dbname={clusters[0].database} "
        f"target_session_attrs=read-write connect_timeout={CONNECT_TIMEOUT}"
    )


def start_standby(
    primary: PostgresCluster,
    home: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 120.0,
) -> PostgresCluster:
    """Start the standby of ``primary`` in ``home`` (made by ``pg_basebackup`` on first use),
    make it the primary's synchronous standby and wait until the primary reports it so."""
    port = port if port is not None else free_port()
    files = postgres.cluster_files(home)
    data_dir = files / "data"
    log_path = log_path or home / "postgres.log"
    home.mkdir(parents=True, exist_ok=True)
    files.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    postgres.chown_to_owner(files)
    if not (data_dir / "PG_VERSION").is_file():
        _drop_slot(primary)  # of a standby that was removed: -C would refuse to make it again
        postgres.run_as_owner(
            [
                str(primary.bindir / "pg_basebackup"),
                "-D",
                str(data_dir),
                "-h",
                LOCALHOST,
                "-p",
                str(primary.port),
                "-U",
                postgres.SUPERUSER,
                "-R",
                "-X",
                "stream",
                "-C",
                "-S",
                STANDBY_NAME,
                "--checkpoint=fast",
            ],
            log_path=log_path,
            what="pg_basebackup",
        )
        # -R wrote primary_conninfo and primary_slot_name; a later line wins, and this one names
        # the standby for synchronous_standby_names.
        conninfo = (
            f"host={LOCALHOST} port={primary.port} user={postgres.SUPERUSER} "
            f"application_name={STANDBY_NAME}"
        )
        with (data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\nsynchronous_standby_names = ''\n")
        postgres.chown_to_owner(files)
    standby = postgres.launch(
        primary.bindir,
        files,
        port=port,
        log_path=log_path,
        database=primary.database,
        timeout=timeout,
    )
    try:
        make_synchronous(primary, timeout=timeout)
    except BaseException:
        postgres.stop(standby)
        raise
    return standby


def _admin(cluster: PostgresCluster) -> str:
    return f"postgresql://{postgres.SUPERUSER}@{LOCALHOST}:{cluster.port}/postgres"


def _drop_slot(primary: PostgresCluster) -> None:
    with pg.connect(_admin(primary), autocommit=True) as conn, pg.translated():
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            (STANDBY_NAME,),
        )


def make_synchronous(primary: PostgresCluster, *, timeout: float = 60.0) -> None:
    """Name the standby in the primary's ``synchronous_standby_names`` and wait until it
    streams as ``sync``."""
    with pg.connect(_admin(primary), autocommit=True) as conn, pg.translated():
        conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
        conn.execute("ALTER SYSTEM SET synchronous_commit = 'on'")
        conn.execute("SELECT pg_reload_conf()")
        for _ in Backoff(initial=0.1, maximum=0.5).attempts(timeout=timeout):
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                (STANDBY_NAME,),
            ).fetchone()
            if row is not None and row[0] == "sync":
                return
    raise StackError(
        f"the standby did not become synchronous within {timeout:.0f}s", log=primary.log_path
    )


def run_alone(primary: PostgresCluster) -> bool:
    """Undo :func:`make_synchronous` (the dev stack started without ``--pg-standby`` after a
    run with it): without this every COMMIT would wait for a standby that does not run. The
    slot goes too, or the primary would keep WAL for it forever. True when there was one."""
    with pg.connect(_admin(primary), autocommit=True) as conn, pg.translated():
        row = conn.execute("SELECT current_setting('synchronous_standby_names')").fetchone()
        if not row or not row[0]:
            return False
        conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        conn.execute("SELECT pg_reload_conf()")
    _drop_slot(primary)
    return True


def replication_state(primary: PostgresCluster) -> str | None:
    """The standby's ``sync_state`` as the primary reports it (None: not streaming)."""
    with pg.connect(_admin(primary), autocommit=True) as conn, pg.translated():
        row = conn.execute(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
            (STANDBY_NAME,),
        ).fetchone()
    return None if row is None else str(row[0])


def promote(standby: PostgresCluster, *, timeout: float = 60.0) -> None:
    """``pg_ctl promote -w``: the standby leaves recovery and accepts writes."""
    postgres.run_as_owner(
        [
            str(standby.bindir / "pg_ctl"),
            "-D",
            str(standby.data_dir),
            "-w",
            "-t",
            str(int(timeout)),
            "promote",
        ],
        log_path=standby.log_path,
        what="pg_ctl promote",
    )


def in_recovery(cluster: PostgresCluster) -> bool:
    url = _admin(cluster)
    with pg.connect(url, autocommit=True, connect_timeout=5) as conn, pg.translated():
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def kill(cluster: PostgresCluster) -> None:
    """SIGKILL the postmaster and every backend of ``cluster`` at once (what a crash of its
    machine does to its clients: their connections are reset, nothing is shut down)."""
    children = _children(cluster.pid)
    for pid in [cluster.pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30.0
    while any(pid_alive(p) for p in [cluster.pid, *children]):
        if time.monotonic() > deadline:
            raise StackError(f"PostgreSQL {cluster.pid} did not die of SIGKILL")
        time.sleep(0.05)
    # A crashed cluster leaves postmaster.pid behind; pg_ctl start copes with it, and the stop
    # at the end must not wait for a process that is gone.
    with contextlib.suppress(OSError):
        (cluster.data_dir / "postmaster.pid").unlink()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def wait_writable(database_url: str, *, timeout: float) -> float:
    """Seconds until ``database_url`` reaches a node that accepts writes."""
    started = time.monotonic()
    for _ in Backoff(initial=0.05, maximum=0.2).attempts(timeout=timeout):
        try:
            with pg.connect(database_url, autocommit=True) as conn, pg.translated():
                conn.execute("SELECT 1")
            return time.monotonic() - started
        except Unavailable:
            continue
    raise StackError(f"no writable PostgreSQL at {database_url} within {timeout:.0f}s")
