"""The store's processes as least-privileged PostgreSQL roles (``kafkastore db roles``, README
"Security"): the writer appends, the indexer indexes, the API reads, a subscription
checkpoints, each connected as its own role (with auth off, and the API with auth on: its token
and stream-ACL caches and its admin routes); and each role is refused what it must not do."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from consumers import PostgresProjection, Subscription
from kafkastore import authstore, dbroles, streamacl
from kafkastore.client import EventStore
from kafkastore.config import Settings, settings_environ
from kafkastore.records import NewEvent, RecordedEvent
from tests.indexer.helpers import running_indexer
from tests.support import unique
from tests.support.serving import users_with_tokens


def _as(database_url: str, role: str) -> str:
    """``database_url`` with ``role`` as its user (the test cluster trusts local logins)."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture(scope="module")
def roles(database_url: str) -> dict[str, str]:
    """Runs ``kafkastore db roles`` as a user would; each role's URL."""
    done = subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", "db", "roles", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for role in dbroles.PRIVILEGES:
        assert done.stdout.count(role) == 1
    return {role: _as(database_url, role) for role in dbroles.PRIVILEGES}


def _eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


class Seen(PostgresProjection):
    """An exactly-once projection into a table its owner granted to the consumer role."""

    def __init__(self, table: str) -> None:
        self.table = table

    def handle(self, conn: psycopg.Connection, event: RecordedEvent) -> None:
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(self.table)),
            (event.stream_id, event.version),
        )


def _connected_roles(database_url: str) -> set[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
    return {r[0] for r in rows}


def test_the_writer_indexer_api_and_a_subscription_run_as_their_own_roles(
    roles: dict[str, str],
    database_url: str,
    make_settings: Callable[..., Settings],
    api_server: Callable[..., str],
) -> None:
    category = unique("Roles").replace("-", "")
    stream = f"{category}-1"
    table = f"seen_{unique('t').replace('-', '_')}"
    with psycopg.connect(database_url, autocommit=True) as conn:  # the projection's owner
        conn.execute(
            sql.SQL("CREATE TABLE {} (stream_id text, version bigint)").format(
                sql.Identifier(table)
            )
        )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
                sql.Identifier(table), sql.Identifier(dbroles.CONSUMER)
            )
        )
    settings = make_settings(
        database_url=roles[dbroles.API], writer_database_url=roles[dbroles.WRITER]
    )
    indexer_settings = settings.replace(database_url=roles[dbroles.INDEXER], writer_database_url="")
    consumer_settings = settings.replace(
        database_url=roles[dbroles.CONSUMER], writer_database_url=""
    )
    assert "://postgres@" not in settings_environ(settings)["KAFKASTORE_DATABASE_URL"]

    with running_indexer(indexer_settings):
        api = api_server(settings)
        event = {"events": [{"type": "Placed", "data": {"n": 1}}]}
        assert httpx.post(f"{api}/streams/{stream}", json=event).status_code == 201
        with EventStore(settings.replace(database_url=roles[dbroles.WRITER])) as store:
            store.append(stream, [NewEvent(type="Shipped", data={"n": 2})])
        page = httpx.get(f"{api}/streams/{stream}?min_version=2&timeout_ms=20000", timeout=30)
        assert page.status_code == 200, page.text
        assert [e["type"] for e in page.json()["events"]] == ["Placed", "Shipped"]
        # Metadata, snapshots and deletes are the writer's; their reads the API's.
        put = httpx.put(f"{api}/streams/{stream}/metadata", json={"custom": {"k": 1}})
        assert put.status_code == 200, put.text
        snap = {"version": 2, "type": "State", "data": {"n": 2}}
        assert httpx.put(f"{api}/streams/{stream}/snapshots", json=snap).status_code == 201
        latest = httpx.get(f"{api}/streams/{stream}/snapshots/latest")
        assert latest.json()["version"] == 2
        category_page = httpx.get(f"{api}/categories/{category}").json()
        assert [e["version"] for e in category_page["events"]] == [1, 2]
        assert httpx.get(f"{api}/metrics").status_code == 200
        with Subscription(
            unique("group"), Seen(table), categories=[category], settings=consumer_settings
        ).start():

            def projected() -> bool:
                with psycopg.connect(database_url) as conn:
                    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                    row = conn.execute(query).fetchone()
                return row is not None and row[0] == 2

            _eventually(projected)
            connected = _connected_roles(database_url)
        deleted = httpx.delete(f"{api}/streams/{stream}")
        assert deleted.status_code == 204, deleted.text
        assert httpx.get(f"{api}/streams/{stream}").status_code == 404

    assert set(dbroles.PRIVILEGES) <= connected
    with psycopg.connect(database_url) as conn:
        checkpoints = conn.execute(
            "SELECT count(*) FROM subscription_checkpoints WHERE topic = %s", (settings.topic,)
        ).fetchone()
    assert checkpoints is not None and checkpoints[0] >= 1


def _listening(database_url: str) -> set[tuple[str, str]]:
    """(role, channel) of every connection that listens (its last statement was LISTEN)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT usename, query FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        ).fetchall()
    return {(r[0], r[1].removeprefix("LISTEN ")) for r in rows}


def test_the_api_with_auth_on_runs_its_caches_and_admin_routes_as_its_own_role(
    roles: dict[str, str],
    database_url: str,
    make_settings: Callable[..., Settings],
    api_server: Callable[..., str],
) -> None:
    tag = unique("r").replace("-", "")
    category, alice = f"Roles{tag}", f"alice-{tag}"
    stream = f"{category}-1"
    settings = make_settings(
        database_url=roles[dbroles.API], writer_database_url=roles[dbroles.WRITER], auth="on"
    )
    # The first admin comes from whoever owns the tables (kafkastore auth user add ...).
    tokens = users_with_tokens(database_url, {"admin": ("admin",), "bob": ()}, tag)
    indexer_settings = settings.replace(database_url=roles[dbroles.INDEXER], writer_database_url="")

    with running_indexer(indexer_settings):
        api = api_server(settings)

        def call(method: str, path: str, token: str, body: Any = None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.request(method, api + path, json=body, headers=headers, timeout=30)

        admin = tokens["admin"]
        # The admin routes: users and tokens, written and read as kafkastore_api.
        assert call("POST", "/auth/users", admin, {"name": alice}).status_code == 201
        created = call("POST", "/auth/tokens", admin, {"user": alice})
        assert created.status_code == 201, created.text
        token_id, token = created.json()["id"], created.json()["token"]
        assert alice in {u["name"] for u in call("GET", "/auth/users", admin).json()["users"]}
        listed = call("GET", f"/auth/tokens?user={alice}", admin).json()["tokens"]
        assert [t["id"] for t in listed] == [token_id]
        # The new token works at once (the token cache reloads as kafkastore_api) ...
        event = {"events": [{"type": "Placed", "data": {"n": 1}}]}
        assert call("POST", f"/streams/{stream}", token, event).status_code == 201
        # ... and so does a stream ACL (written by the writer's role, read by the API's cache).
        acl = {"acl": {"read": [alice], "write": [alice]}}
        assert call("PUT", f"/streams/{stream}/metadata", admin, acl).status_code == 200
        page = call("GET", f"/streams/{stream}?min_version=1&timeout_ms=20000", token)
        assert page.status_code == 200, page.text
        assert call("GET", f"/streams/{stream}", tokens["bob"]).status_code == 403
        assert call("GET", "/metrics", admin).status_code == 200
        listening = _listening(database_url)
        # A revocation (an UPDATE by kafkastore_api, whose trigger notifies) is enforced.
        assert call("DELETE", f"/auth/tokens/{token_id}", admin).status_code == 204
        deadline = time.monotonic() + authstore.revocation_bound(settings.auth_cache_ttl)
        while call("GET", f"/streams/{stream}/state", token).status_code != 401:
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.05)
        assert call("DELETE", f"/auth/users/{alice}", admin).status_code == 204

    assert {
        (dbroles.API, authstore.CHANNEL),
        (dbroles.API, streamacl.CHANNEL),
    } <= listening
    assert alice not in {u.name for u in authstore.list_users(database_url)}


REFUSED: list[tuple[str, str]] = [
    (dbroles.API, "INSERT INTO events SELECT * FROM events WHERE false"),
    (dbroles.API, "UPDATE streams SET version = version WHERE false"),
    (dbroles.API, "INSERT INTO appends SELECT * FROM appends WHERE false"),
    (dbroles.INDEXER, "UPDATE streams SET version = version WHERE false"),
    (dbroles.INDEXER, "INSERT INTO appends SELECT * FROM appends WHERE false"),
    (dbroles.INDEXER, "DELETE FROM appends WHERE false"),
    (dbroles.INDEXER, "SELECT hash FROM auth_tokens"),
    (dbroles.WRITER, "INSERT INTO events SELECT * FROM events WHERE false"),
    (dbroles.WRITER, "UPDATE index_head SET last_position = last_position WHERE false"),
    (dbroles.WRITER, "DELETE FROM appends WHERE false"),
    (dbroles.WRITER, "SELECT hash FROM auth_tokens"),
    (dbroles.CONSUMER, "INSERT INTO appends SELECT * FROM appends WHERE false"),
    (dbroles.CONSUMER, "UPDATE streams SET version = version WHERE false"),
    (dbroles.CONSUMER, "UPDATE index_checkpoints SET next_offset = 0 WHERE false"),
    (dbroles.CONSUMER, "SELECT * FROM events"),
    (dbroles.CONSUMER, "SELECT hash FROM auth_tokens"),
]


@pytest.mark.parametrize(("role", "statement"), REFUSED)
def test_a_role_is_refused_what_its_process_must_not_do(
    roles: dict[str, str], role: str, statement: str
) -> None:
    with (
        psycopg.connect(roles[role], autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)  # type: ignore[arg-type]


def test_db_roles_again_creates_nothing_and_revokes_what_was_granted_beyond(
    roles: dict[str, str], database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("GRANT INSERT ON events TO kafkastore_api")

    assert dbroles.create_roles(database_url) == []

    with (
        psycopg.connect(roles[dbroles.API], autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("INSERT INTO events SELECT * FROM events WHERE false")


def test_regrant_after_a_migration_restores_the_privileges_of_each_role(
    roles: dict[str, str], database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON events FROM kafkastore_api")
        assert dbroles.regrant(conn)
    with psycopg.connect(roles[dbroles.API], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) >= 0 FROM events").fetchone() == (True,)
