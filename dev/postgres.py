"""A PostgreSQL cluster of the project's own: the distribution's server binaries, ``initdb`` into a
data directory under ``.kafkastore/``, ``pg_ctl`` to start and stop it.

initdb and the server refuse to run as root, so when we are root they run as the ``postgres``
system user (``runuser``). That user may not be able to enter the checkout (a clone in root's
home, mode 0700), so as root the cluster's files live in a directory of their own that it owns:
``/var/lib/kafkastore/<hash of the home directory>/`` (:func:`cluster_files`; ``dev.json`` names
it as ``postgres.data_dir``), and :func:`remove` deletes it. The server's log stays where the
caller wants it: pg_ctl writes to a file we opened, not one it opens as ``postgres``.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dev.process import LOCALHOST, StackError, apt_install, free_port, terminate, wait_gone
from kafkastore import pg
from kafkastore.errors import Unavailable
from kafkastore.retry import Backoff

log = logging.getLogger("dev.postgres")

DATABASE = "kafkastore"
SUPERUSER = "postgres"
# A dev box, not a benchmark rig, but big enough for the writer's and indexer's pools. fsync and
# synchronous_commit stay at their defaults (on): durability is part of what we demonstrate.
SERVER_OPTIONS = {
    "listen_addresses": LOCALHOST,
    "max_connections": "200",
    "shared_buffers": "256MB",
}


SHARED_ROOT = Path("/var/lib/kafkastore")
"""Where clusters started as root keep their files (readable by the ``postgres`` user)."""


def cluster_files(home: Path) -> Path:
    """The directory of the cluster of ``home``: ``home`` itself, except as root, where it is
    ``SHARED_ROOT/<hash of home>`` (unless ``home`` already holds a cluster made before)."""
    if os.geteuid() != 0 or (home / "data" / "PG_VERSION").is_file():
        return home
    return SHARED_ROOT / hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:16]


def remove(home: Path) -> None:
    """Delete the cluster files of ``home`` kept outside it (stop the cluster first)."""
    files = cluster_files(home)
    if files != home:
        shutil.rmtree(files, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class PostgresCluster:
    """A running cluster."""

    pid: int
    """The postmaster."""
    port: int
    data_dir: Path
    bindir: Path
    log_path: Path
    database: str = DATABASE

    @property
    def database_url(self) -> str:
        return f"postgresql://{SUPERUSER}@{LOCALHOST}:{self.port}/{self.database}"


def find_bindir() -> Path | None:
    """The newest installed server's bin directory (Debian keeps them per major version)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        if Path(candidate, "initdb").is_file():
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").is_file():
            return bindir
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def ensure_installed(*, log_path: Path | None = None) -> Path:
    """The server's bin directory, installing the distribution's package when it is missing."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install the "
            "server package (Debian/Ubuntu: sudo apt-get install postgresql)"
        )
    env = {**_base_env(), "DEBIAN_FRONTEND": "noninteractive"}
    apt_install(apt, "postgresql", env=env, log_path=log_path)
    bindir = find_bindir()
    if bindir is None:
        raise StackError("installed postgresql but found no initdb", log=log_path)
    return bindir


def _base_env() -> dict[str, str]:
    # The server's tools need no configuration of ours; a minimal environment keeps the
    # engineer's PG* variables from pointing initdb/pg_ctl at another cluster.
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {"PATH": path, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *cmd]
    return cmd


def chown_to_owner(*paths: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise StackError("running as root needs a 'postgres' system user for the server") from None
    for path in paths:
        os.chown(path, owner.pw_uid, owner.pw_gid)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid)


def run_as_owner(cmd: list[str], *, log_path: Path, what: str) -> None:
    # The log is opened here (as us) and inherited: pg_ctl start without -l leaves the server's
    # output on it, so the log may live where the ``postgres`` user cannot enter.
    with log_path.open("ab") as out:
        done = subprocess.run(
            _as_owner(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_base_env(),
            cwd="/",
            check=False,
        )
    if done.returncode:
        raise StackError(f"{what} failed (exit {done.returncode})", log=log_path)


def start(
    home: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    database: str = DATABASE,
    timeout: float = 60.0,
) -> PostgresCluster:
    """Start the cluster in ``home/data`` (``initdb`` on first use), create ``database``."""
    bindir = ensure_installed(log_path=log_path)
    port = port if port is not None else free_port()
    files = cluster_files(home)
    data_dir = files / "data"
    log_path = log_path or home / "postgres.log"
    home.mkdir(parents=True, exist_ok=True)
    if files != home:
        SHARED_ROOT.mkdir(parents=True, exist_ok=True)
        SHARED_ROOT.chmod(0o755)  # ours; whatever root's umask, ``postgres`` must pass it
    files.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    # The server writes its data and socket as the owner of the data directory.
    chown_to_owner(files)
    if not (data_dir / "PG_VERSION").is_file():
        run_as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            log_path=log_path,
            what="initdb",
        )
    cluster = launch(
        bindir, files, port=port, log_path=log_path, database=database, timeout=timeout
    )
    try:
        _create_database(cluster)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def launch(
    bindir: Path,
    files: Path,
    *,
    port: int,
    log_path: Path,
    database: str = DATABASE,
    timeout: float = 60.0,
) -> PostgresCluster:
    """``pg_ctl start`` the initialised cluster in ``files/data`` (a primary, or a standby
    when the data directory holds ``standby.signal``) and wait until it accepts connections."""
    data_dir = files / "data"
    # The Unix socket lives in our own directory, not /tmp or /run/postgresql: several clusters
    # (the dev stack, test sessions) run side by side and none depends on the system's layout.
    options = {**SERVER_OPTIONS, "unix_socket_directories": str(_socket_dir(files))}
    opts = " ".join([f"-p {port}", *(f"-c {k}={shlex.quote(v)}" for k, v in options.items())])
    run_as_owner(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data_dir),
            "-o",
            opts,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        log_path=log_path,
        what="pg_ctl start",
    )
    return PostgresCluster(
        pid=_postmaster_pid(data_dir),
        port=port,
        data_dir=data_dir,
        bindir=bindir,
        log_path=log_path,
        database=database,
    )


def _socket_dir(home: Path) -> Path:
    """``home``, unless the socket's path would pass the kernel's limit (108 bytes for
    ``sun_path``): then a short directory in /tmp derived from ``home``."""
    if len(str(home / ".s.PGSQL.65535")) < 100:
        return home
    short = (
        Path(tempfile.gettempdir()) / f"kafkastore-pg-{hashlib.sha1(bytes(home)).hexdigest()[:10]}"
    )
    short.mkdir(exist_ok=True)
    chown_to_owner(short)
    return short


def _postmaster_pid(data_dir: Path) -> int:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        raise StackError(f"no postmaster.pid in {data_dir}") from None


def _create_database(cluster: PostgresCluster) -> None:
    from psycopg import sql

    url = f"postgresql://{SUPERUSER}@{LOCALHOST}:{cluster.port}/postgres"
    for _ in Backoff(initial=0.1, maximum=0.1).attempts(timeout=10.0):
        try:
            conn = pg.connect(url, autocommit=True, connect_timeout=5)
            break
        except Unavailable as exc:
            log.debug("connecting to %s failed: %s", url, exc.message)
    else:
        raise StackError(f"cannot connect to {url}", log=cluster.log_path)
    with conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (cluster.database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cluster.database)))


def stop(cluster: PostgresCluster, *, timeout: float = 60.0) -> None:
    stop_data_dir(
        cluster.data_dir,
        cluster.bindir,
        pid=cluster.pid,
        log_path=cluster.log_path,
        timeout=timeout,
    )


def stop_data_dir(
    data_dir: Path,
    bindir: Path,
    *,
    pid: int | None = None,
    log_path: Path | None = None,
    timeout: float = 60.0,
) -> None:
    """``pg_ctl stop -m fast``: roll back open transactions, checkpoint, exit. If pg_ctl cannot
    (a damaged data directory), SIGINT the postmaster, which is the same fast shutdown."""
    if not (data_dir / "postmaster.pid").exists():
        return
    cmd = [
        str(bindir / "pg_ctl"),
        "-D",
        str(data_dir),
        "-m",
        "fast",
        "-w",
        "-t",
        str(int(timeout)),
        "stop",
    ]
    with open(log_path or os.devnull, "ab") as out:
        done = subprocess.run(
            _as_owner(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_base_env(),
            cwd="/",
            check=False,
        )
    if pid is None:
        return
    if done.returncode:
        terminate(pid, timeout=timeout, sig=signal.SIGINT)
    elif not wait_gone(pid, 10.0):
        # pg_ctl returns once postmaster.pid is gone, a moment before the postmaster exits:
        # "stopped" means no process is left.
        terminate(pid, timeout=timeout, sig=signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    """``python -m dev.postgres remove HOME...``: delete the cluster files of each HOME kept
    outside it (``make clean``; the clusters must be stopped)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dev.postgres")
    parser.add_argument("action", choices=["remove"])
    parser.add_argument("home", type=Path, nargs="+")
    args = parser.parse_args(argv)
    for home in args.home:
        remove(home)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
