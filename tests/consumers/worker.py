"""A subscription process for the kill tests (``python -m tests.consumers.worker``).

Arguments: ``MODE GROUP [TABLE] OUT``.
Settings come from the ``KAFKASTORE_*`` environment. Every delivered event is appended to OUT
as ``<pid> <stream_id> <version> <event_id>`` (flushed per line, so a SIGKILL loses nothing that
was written). MODE ``alo`` is a plain at-least-once handler; ``eo TABLE`` is an exactly-once
PostgresProjection summing ``amount`` per stream into TABLE.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time

import psycopg
from psycopg import sql

from consumers import PostgresProjection, Subscription
from kafkastore.records import RecordedEvent

DELAY = 0.003


class Totals(PostgresProjection):
    def __init__(self, table: str, out: Log) -> None:
        self.table = table
        self.out = out

    def setup(self, conn: psycopg.Connection) -> None:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (stream_id text PRIMARY KEY, total bigint, n int)"
            ).format(sql.Identifier(self.table))
        )

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} AS t VALUES (%s, %s, 1) ON CONFLICT (stream_id) "
                "DO UPDATE SET total = t.total + excluded.total, n = t.n + 1"
            ).format(sql.Identifier(self.table)),
            (event.stream_id, event.data["amount"]),
        )
        time.sleep(DELAY)
        self.out(event)


class Log:
    def __init__(self, path: str) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        self.pid = os.getpid()

    def __call__(self, event: RecordedEvent) -> None:
        self.file.write(f"{self.pid} {event.stream_id} {event.version} {event.id}\n")


def _exit_with_parent() -> None:
    """SIGKILL ourselves when the test process is gone (no orphan outlives a killed pytest)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    faulthandler.register(signal.SIGUSR1)  # stacks on demand, when a test hangs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    mode, group, *rest = argv
    log = Log(rest[-1])
    _exit_with_parent()
    if mode == "alo":

        def handler(event: RecordedEvent) -> None:
            time.sleep(DELAY)
            log(event)

        sub = Subscription(group, handler, max_batch=50)
    else:
        sub = Subscription(group, Totals(rest[0], log), max_batch=50)
    print("worker ready", flush=True)
    sub.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
