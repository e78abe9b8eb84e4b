"""The toxiproxy driver (:mod:`dev.toxiproxy`) against a real server in front of PostgreSQL:
each toxic does what the fault tests rely on, in the one direction it is put on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dev import toxiproxy
from kafkastore import pg
from kafkastore.errors import Unavailable
from tests.support import unique

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(toxiproxy_api: toxiproxy.Toxiproxy, database_url: str) -> Iterator[toxiproxy.Proxy]:
    """A proxy of this test's own in front of the session's PostgreSQL."""
    params = conninfo_to_dict(database_url)
    made = toxiproxy_api.create(unique("pg"), f"{params['host']}:{params['port']}")
    yield made
    toxiproxy_api.delete(made)


def _through(proxy: toxiproxy.Proxy, database_url: str) -> str:
    return make_conninfo(database_url, host="127.0.0.1", port=proxy.port)


def _round_trip(conn: psycopg.Connection) -> float:
    started = time.monotonic()
    conn.execute("SELECT 1").fetchone()
    return time.monotonic() - started


@pytest.fixture
def table(database_url: str) -> Iterator[str]:
    name = unique("toxic").replace("-", "_")
    with pg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (n int)")
    yield name
    with pg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


def _count(database_url: str, table: str) -> int:
    with pg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _insert_in_thread(
    conn: psycopg.Connection, table: str
) -> tuple[threading.Thread, list[BaseException]]:
    """INSERT one row on ``conn`` (connected before the toxic came) in a thread."""
    errors: list[BaseException] = []

    def insert() -> None:
        try:
            with conn:
                conn.execute(f"INSERT INTO {table} VALUES (1)")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=insert, daemon=True)
    thread.start()
    return thread, errors


def test_latency_delays_every_round_trip_and_removing_it_restores_the_pace(
    proxy: toxiproxy.Proxy, database_url: str
) -> None:
    with pg.connect(_through(proxy, database_url), autocommit=True) as conn:
        before = min(_round_trip(conn) for _ in range(3))
        toxic = proxy.latency(400, jitter=100)
        assert [t.type for t in proxy.toxics()] == ["latency"]
        slowed = _round_trip(conn)
        proxy.remove(toxic)
        after = min(_round_trip(conn) for _ in range(3))

    assert slowed >= 0.3 > before
    assert after < 0.3


def test_bandwidth_limits_the_rate_of_replies(proxy: toxiproxy.Proxy, database_url: str) -> None:
    proxy.bandwidth(100)  # KB/s
    started = time.monotonic()
    with pg.connect(_through(proxy, database_url), autocommit=True) as conn:
        conn.execute("SELECT repeat('x', 300000)").fetchone()

    assert time.monotonic() - started >= 2.0  # 300 KB at 100 KB/s


def test_dropping_replies_only_lets_the_statement_reach_the_server(
    proxy: toxiproxy.Proxy, database_url: str, table: str
) -> None:
    conn = pg.connect(_through(proxy, database_url), autocommit=True)
    proxy.black_hole(stream="downstream")
    thread, errors = _insert_in_thread(conn, table)
    deadline = time.monotonic() + 10
    while _count(database_url, table) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    assert _count(database_url, table) == 1  # the server did it...
    thread.join(1.0)
    assert thread.is_alive()  # ...and its answer never came back
    proxy.set_enabled(False)  # a disabled proxy closes its connections
    thread.join(10)
    assert not thread.is_alive() and errors


def test_dropping_requests_only_keeps_the_statement_from_the_server(
    proxy: toxiproxy.Proxy, database_url: str, table: str
) -> None:
    conn = pg.connect(_through(proxy, database_url), autocommit=True)
    proxy.black_hole(stream="upstream", close_after_ms=1500)
    thread, errors = _insert_in_thread(conn, table)
    thread.join(10)

    assert not thread.is_alive() and errors  # closed after 1.5 s
    assert _count(database_url, table) == 0


def test_reset_peer_breaks_the_connection(proxy: toxiproxy.Proxy, database_url: str) -> None:
    with pg.connect(_through(proxy, database_url), autocommit=True) as conn:
        _round_trip(conn)
        proxy.reset_peer()
        with pytest.raises(Unavailable), pg.translated():
            _round_trip(conn)


def test_a_disabled_proxy_refuses_connections_until_reset_heals_it(
    toxiproxy_api: toxiproxy.Toxiproxy, proxy: toxiproxy.Proxy, database_url: str
) -> None:
    proxy.latency(50)
    proxy.set_enabled(False)
    assert not proxy.enabled()
    with pytest.raises(Unavailable):
        pg.connect(_through(proxy, database_url), connect_timeout=5)

    toxiproxy_api.reset()

    assert proxy.enabled() and proxy.toxics() == []
    with pg.connect(_through(proxy, database_url), autocommit=True) as conn:
        assert _round_trip(conn) < 1.0
