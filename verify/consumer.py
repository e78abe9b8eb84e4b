"""The exactly-once projection a verification run delivers to: ``python -m verify.consumer``.

A :class:`consumers.subscription.PostgresProjection` run by a
:class:`~consumers.subscription.Subscription` with default settings (the ``KAFKASTORE_*``
variables name Kafka, PostgreSQL and the topic): each delivery is a row of ``verify_delivered``
and a change of ``verify_state``, written in the transaction that stores the group's position.
It runs as a process of its own so faults can SIGKILL and restart it.
"""

from __future__ import annotations

import argparse

import psycopg

from consumers.subscription import PostgresProjection, Subscription
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent
from verify import sql


class VerifyProjection(PostgresProjection):
    """Deliveries and per-stream state (see :mod:`verify.sql`)."""

    def setup(self, conn: psycopg.Connection) -> None:
        conn.execute(sql.CREATE_TABLES)

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        n = event.data.get("n", 0) if isinstance(event.data, dict) else 0
        conn.execute(sql.INSERT_DELIVERED, (event.stream_id, event.version, event.id))
        conn.execute(sql.UPSERT_STATE, (event.stream_id, int(n), event.version))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify.consumer")
    parser.add_argument("--group", required=True, help="the consumer group")
    args = parser.parse_args(argv)
    Subscription(args.group, VerifyProjection(), settings=Settings.from_env()).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
