"""The token cache of a ``kafkastore serve`` with auth on (:class:`kafkastore.authstore.
TokenCache`, README "Security"): a revoked token or a changed role of a token already cached is
enforced within :func:`~kafkastore.authstore.revocation_bound` even when the NOTIFY that should
announce it is lost, and authenticated appends cost no query of the tokens.

The server has a database of its own: no other test's users or tokens notify its cache, and the
scans of its ``auth_tokens`` table (``pg_stat_user_tables``) are those of this server's cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from kafkastore import authstore, schema
from kafkastore.config import Settings
from tests.support import unique
from tests.support.databases import temporary_database
from tests.support.serving import serving
from tests.support.topics import own_settings

TTL = 1.0
"""The default ``auth_cache_ttl`` (the server runs with the defaults)."""


@dataclass(frozen=True)
class Cached:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def cached(kafka_bootstrap: str, database_url: str, logs_dir: Path) -> Iterator[Cached]:
    with temporary_database(database_url) as own:
        schema.migrate(own)
        settings = own_settings(kafka_bootstrap, own, auth="on")
        with serving(settings, logs_dir / f"auth-cache-{unique('s')}.log") as url:
            yield Cached(url, settings)


def _status(c: Cached, token: str, path: str = "/all?limit=1") -> int:
    answer = httpx.get(c.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return answer.status_code


def _user_with_token(c: Cached, roles: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """A new user: (name, token id, token)."""
    name = unique("u")
    authstore.add_user(c.settings.database_url, name, roles)
    info, token = authstore.create_token(c.settings.database_url, name)
    return name, info.id, token


def _change(c: Cached, statement: str, params: tuple[object, ...], *, notify: bool) -> None:
    """Run ``statement`` on the server's database; with ``notify=False`` as a write whose
    NOTIFY is lost (no trigger fires), and check that none reached a listener."""
    with (
        psycopg.connect(c.settings.database_url, autocommit=True) as listener,
        psycopg.connect(c.settings.database_url, autocommit=True) as conn,
    ):
        listener.execute(authstore.LISTEN)
        if not notify:
            conn.execute("SET session_replication_role = replica")
        conn.execute(statement, params)  # type: ignore[arg-type]
        heard = list(listener.notifies(timeout=0.2, stop_after=1))
    assert len(heard) == (1 if notify else 0)


def _seconds_until(c: Cached, token: str, status: int) -> float:
    """Seconds from now until the server answers ``status`` to ``token`` (at most the bound)."""
    since = time.monotonic()
    bound = authstore.revocation_bound(c.settings.auth_cache_ttl)
    while (answer := _status(c, token)) != status:
        assert time.monotonic() - since <= bound, f"still {answer} after {bound} s"
        time.sleep(0.02)
    return time.monotonic() - since


def test_the_server_runs_with_the_default_ttl_and_the_stated_bound(cached: Cached) -> None:
    assert cached.settings.auth_cache_ttl == TTL
    assert authstore.revocation_bound(TTL) == 2.0  # README "Security", docs/http.md


def test_a_revocation_whose_notification_is_lost_is_enforced_within_the_bound(
    cached: Cached,
) -> None:
    _, token_id, token = _user_with_token(cached)
    assert _status(cached, token) == 403  # authenticated (a plain user may not read $all)

    revoke = "UPDATE auth_tokens SET revoked_at = now() WHERE id = %s"
    _change(cached, revoke, (token_id,), notify=False)

    _seconds_until(cached, token, 401)


@pytest.mark.parametrize("notify", [True, False], ids=["notified", "notification-lost"])
def test_a_role_change_of_a_token_already_cached_is_enforced_within_the_bound(
    cached: Cached, notify: bool
) -> None:
    name, _, token = _user_with_token(cached)
    assert _status(cached, token) == 403  # cached as a plain user
    set_roles = "UPDATE auth_users SET roles = %s WHERE name = %s"

    _change(cached, set_roles, (["ops"], name), notify=notify)
    _seconds_until(cached, token, 200)  # promoted: the same token reads $all
    _change(cached, set_roles, ([], name), notify=notify)
    _seconds_until(cached, token, 403)  # demoted again


def _scans_of_the_tokens(c: Cached) -> int:
    """How often PostgreSQL scanned ``auth_tokens`` (sequential and index scans) so far, as
    its statistics say (a backend reports them when it ends: the cache's reloads do at once)."""
    with psycopg.connect(c.settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE relname = 'auth_tokens'"
        ).fetchone()
    assert row is not None
    return int(row[0])


REPORTED = 1.5
"""Seconds to wait before reading the statistics (the backends before had time to report)."""


def test_authenticated_appends_cost_no_query_of_the_tokens(cached: Cached) -> None:
    _, _, token = _user_with_token(cached)
    stream = unique("Hot")
    body = {"events": [{"type": "Hot", "data": {"n": 1}}]}
    appends = 100
    with httpx.Client(
        base_url=cached.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        assert client.post(f"/streams/{stream}", json=body).status_code == 201  # cached now
        time.sleep(REPORTED)
        before = _scans_of_the_tokens(cached)
        started = time.monotonic()
        for _ in range(appends):
            assert client.post(f"/streams/{stream}", json=body).status_code == 201
        time.sleep(REPORTED)
        after = _scans_of_the_tokens(cached)
        window = time.monotonic() - started

    # The cache reloads every ttl (one scan each) whatever the traffic; nothing per request.
    polls = window / cached.settings.auth_cache_ttl
    assert 1 <= after - before <= polls + 2, (after - before, polls)
    assert appends >= 4 * (polls + 2), f"too slow to tell ({window:.1f} s)"
