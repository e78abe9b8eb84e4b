"""The synchronous standby of :mod:`dev.pg_standby` (``kafkastore dev --pg-standby``, the
``pg_standby_pair`` fixture): streaming as ``sync``, reached through the multi-host URL."""

from __future__ import annotations

import time

import psycopg
import pytest

from dev import pg_standby
from dev.postgres import PostgresCluster
from kafkastore import pg
from tests.faults.conftest import PgPair
from tests.support import unique

pytestmark = pytest.mark.slow


def _url(cluster: PostgresCluster) -> str:
    return f"postgresql://postgres@127.0.0.1:{cluster.port}/kafkastore"


def test_the_standby_streams_synchronously_and_replays_every_commit(
    pg_standby_pair: PgPair,
) -> None:
    assert pg_standby.replication_state(pg_standby_pair.primary) == "sync"
    assert pg_standby.in_recovery(pg_standby_pair.standby)
    stream = unique("Standby")
    with pg.connect(pg_standby_pair.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT inet_server_port(), current_setting('synchronous_commit')")
        assert row.fetchone() == (pg_standby_pair.primary.port, "on")
        conn.execute(
            "INSERT INTO streams (stream_id, category, version) VALUES (%s, 'Standby', 0)",
            (stream,),
        )
    with pg.connect(_url(pg_standby_pair.standby), autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while not conn.execute("SELECT 1 FROM streams WHERE stream_id = %s", (stream,)).fetchone():
            assert time.monotonic() < deadline, "the standby did not replay the commit"
            time.sleep(0.05)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # a standby is read-only
            conn.execute("DELETE FROM streams WHERE stream_id = %s", (stream,))


def test_the_multi_host_url_skips_a_node_that_is_down(pg_standby_pair: PgPair) -> None:
    # The first host refuses (nothing listens there); libpq goes on to the next one.
    pair = pg_standby_pair
    url = pg_standby.multi_host_url([pair.primary, pair.standby], ports=[1, pair.primary.port])
    with pg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone() == (pair.primary.port,)
