"""Every route of a ``kafkastore serve`` with auth on, against every kind of caller (docs/http.md
"Security"): exact statuses and bodies, nothing appended by a refusal, revocation within the
stated bound, bad input on the admin routes and the CLI, no secret in the logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from kafkastore import authstore
from kafkastore.config import Settings, settings_environ
from tests.support import unique
from tests.support.serving import CALLERS, serving, spoiled_tokens, users_with_tokens
from tests.support.topics import own_settings

UNAUTHORIZED = {"error": "unauthorized", "message": "a valid bearer token is required"}
FORBIDDEN = {"error": "forbidden", "message": "access denied"}


@dataclass(frozen=True)
class Secured:
    url: str
    settings: Settings
    tokens: dict[str, str]
    category: str
    log_path: Path


@pytest.fixture(scope="module")
def secured(kafka_bootstrap: str, database_url: str, logs_dir: Path) -> Iterator[Secured]:
    category = unique("Secret").replace("-", "")
    settings = own_settings(
        kafka_bootstrap,
        database_url,
        auth="on",
        auth_category_acls=f'{{"{category}": {{"read": ["alice-{category}"], '
        f'"write": ["alice-{category}"]}}}}',
    )
    tokens = users_with_tokens(database_url, CALLERS, category)
    tokens.update(spoiled_tokens(database_url, f"alice-{category}"))
    log_path = logs_dir / f"auth-serve-{category}.log"
    with serving(settings, log_path) as url:
        time.sleep(1.0)  # the expired token is past its expiry
        yield Secured(url, settings, tokens, category, log_path)


def _call(
    s: Secured, method: str, path: str, who: str | None, body: Any = None, **headers: str
) -> httpx.Response:
    if who is not None:
        headers["Authorization"] = f"Bearer {s.tokens.get(who, who)}"
    return httpx.request(method, s.url + path, json=body, headers=headers, timeout=30)


def _event() -> dict[str, Any]:
    return {"events": [{"type": "Tested", "data": {"n": 1}}]}


def _routes(s: Secured, stream: str = "") -> list[tuple[str, str, Any, str, str, int]]:
    """(method, path, body, caller without the right, caller with it, status when allowed), on
    ``stream`` (``<category>-1`` unless given)."""
    stream = stream or f"{s.category}-1"
    return [
        ("POST", f"/streams/{stream}", _event(), "bob", "alice", 201),
        ("POST", "/append", {"appends": [{"stream_id": stream, **_event()}]}, "bob", "alice", 201),
        ("GET", f"/streams/{stream}?min_version=1&timeout_ms=10000", None, "bob", "alice", 200),
        ("GET", f"/streams/{stream}/state", None, "bob", "alice", 200),
        ("GET", f"/categories/{s.category}", None, "bob", "alice", 200),
        ("GET", "/all?limit=1", None, "alice", "ops", 200),
        ("GET", "/metrics", None, "alice", "ops", 200),
        ("GET", "/auth/users", None, "ops", "admin", 200),
        ("GET", "/auth/tokens", None, "ops", "admin", 200),
        ("POST", "/auth/users", {"name": unique("carol")}, "alice", "admin", 201),
        ("POST", "/auth/tokens", {"user": f"bob-{s.category}"}, "alice", "admin", 201),
        ("DELETE", "/auth/tokens/0123456789ab", None, "alice", "admin", 404),
        ("DELETE", "/auth/users/nobody", None, "alice", "admin", 404),
    ]


def _version(s: Secured, stream_id: str) -> int:
    answer = _call(s, "GET", f"/streams/{stream_id}/state", "admin")
    return int(answer.json()["version"]) if answer.status_code == 200 else 0


def _head(s: Secured, stream_id: str) -> Any:
    """The writer's head of ``stream_id`` in PostgreSQL (None: never appended to), which an
    append moves before it answers (the index may lag behind it)."""
    with psycopg.connect(s.settings.database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT version FROM streams WHERE stream_id = %s", (stream_id,)
        ).fetchone()


def test_every_route_refuses_missing_bad_revoked_and_expired_tokens_with_401(
    secured: Secured,
) -> None:
    bad = "kst_0123456789ab." + "A" * 43
    url, bob = secured.settings.database_url, f"bob-{secured.category}"
    stream = f"{secured.category}-{unique('untouched')}"  # of this test only
    routes = _routes(secured, stream)
    bobs_tokens = authstore.list_tokens(url, bob)
    for method, path, body, _, _, _ in routes:
        for who in (None, bad, "revoked", "expired", "not-a-token"):
            answer = _call(secured, method, path, who, body)
            assert answer.status_code == 401, (method, path, who, answer.text)
            assert answer.json() == UNAUTHORIZED
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    # Nothing appended, created or revoked by the refusals.
    assert _head(secured, stream) is None
    [new_user] = [body["name"] for _, path, body, *_ in routes if path == "/auth/users" and body]
    assert new_user not in {u.name for u in authstore.list_users(url)}
    assert authstore.list_tokens(url, bob) == bobs_tokens


def test_every_route_refuses_a_principal_without_the_right_with_403_and_allows_one_with_it(
    secured: Secured,
) -> None:
    stream = f"{secured.category}-1"
    for method, path, body, without, with_right, status in _routes(secured):
        before = _version(secured, stream)
        refused = _call(secured, method, path, without, body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json() == FORBIDDEN
        assert _version(secured, stream) == before  # nothing appended by a refusal
        allowed = _call(secured, method, path, with_right, body)
        assert allowed.status_code == status, (method, path, allowed.text)


def test_a_refusal_does_not_reveal_whether_the_stream_exists(secured: Secured) -> None:
    existing = f"{secured.category}-exists"
    assert _call(secured, "POST", f"/streams/{existing}", "alice", _event()).status_code == 201

    for who, status, body in ((None, 401, UNAUTHORIZED), ("bob", 403, FORBIDDEN)):
        answers = [
            _call(secured, "GET", f"/streams/{sid}{suffix}", who)
            for sid in (existing, f"{secured.category}-never")
            for suffix in ("", "/state")
        ]
        assert {(a.status_code, a.text) for a in answers} == {
            (status, httpx.Response(200, json=body).text)
        }


def test_an_atomic_append_needs_write_on_every_stream_and_names_none(secured: Secured) -> None:
    open_stream, secret = unique("Open"), f"{secured.category}-atomic"
    body = {"appends": [{"stream_id": open_stream, **_event()}, {"stream_id": secret, **_event()}]}

    refused = _call(secured, "POST", "/append", "bob", body)

    assert refused.status_code == 403
    assert refused.json() == FORBIDDEN
    assert _version(secured, open_stream) == 0 and _version(secured, secret) == 0
    assert _call(secured, "POST", "/append", "alice", body).status_code == 201


def test_open_paths_answer_without_a_token(secured: Secured) -> None:
    assert _call(secured, "GET", "/healthz", None).status_code == 200
    assert _call(secured, "GET", "/readyz", None).status_code == 200
    assert "/streams/{stream_id}" in _call(secured, "GET", "/openapi.json", None).json()["paths"]


def test_a_revoked_token_stops_working_within_the_stated_bound(secured: Secured) -> None:
    info, token = authstore.create_token(secured.settings.database_url, f"bob-{secured.category}")
    assert _call(secured, "GET", "/healthz", token).status_code == 200
    assert _call(secured, "GET", "/all?limit=1", token).status_code == 403  # known at once

    authstore.revoke_token(secured.settings.database_url, info.id)
    revoked_at = time.monotonic()
    bound = authstore.revocation_bound(secured.settings.auth_cache_ttl)
    while _call(secured, "GET", "/all?limit=1", token).status_code != 401:
        assert time.monotonic() - revoked_at <= bound
        time.sleep(0.05)


def test_a_user_removed_and_added_again_with_a_role_has_it_with_a_new_token_only(
    secured: Secured,
) -> None:
    # A role change of a token already cached: tests/kafkastore/test_auth_cache.py.
    name = unique("dora")
    authstore.add_user(secured.settings.database_url, name)
    _, old = authstore.create_token(secured.settings.database_url, name)
    assert _call(secured, "GET", "/all?limit=1", old).status_code == 403

    authstore.remove_user(secured.settings.database_url, name)
    authstore.add_user(secured.settings.database_url, name, ("ops",))
    _, token = authstore.create_token(secured.settings.database_url, name)

    assert _call(secured, "GET", "/all?limit=1", token).status_code == 200
    removed_at = time.monotonic()
    bound = authstore.revocation_bound(secured.settings.auth_cache_ttl)
    while _call(secured, "GET", "/all?limit=1", old).status_code != 401:  # went with the user
        assert time.monotonic() - removed_at <= bound
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/users", {"name": ""}),
        ("/auth/users", {"name": "a b"}),
        ("/auth/users", {"name": "x" * 129}),
        ("/auth/users", {"name": "eve", "roles": ["root"]}),
        ("/auth/users", {}),
        ("/auth/tokens", {"user": ""}),
        ("/auth/tokens", {"user": "x", "expires_in": -1}),
        ("/auth/tokens", ["not", "an", "object"]),
    ],
)
def test_bad_input_on_the_admin_routes_is_a_clear_400(
    secured: Secured, path: str, body: Any
) -> None:
    answer = _call(secured, "POST", path, "admin", body)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"


def test_a_duplicate_user_is_a_clear_409(secured: Secured) -> None:
    name = unique("erin")
    assert _call(secured, "POST", "/auth/users", "admin", {"name": name}).status_code == 201

    again = _call(secured, "POST", "/auth/users", "admin", {"name": name})

    assert again.status_code == 409
    assert again.json() == {
        "error": "already_exists",
        "message": f"user {name!r} already exists",
        "details": ["name"],
    }


def test_a_token_for_an_unknown_user_is_a_clear_404(secured: Secured) -> None:
    answer = _call(secured, "POST", "/auth/tokens", "admin", {"user": "nobody-at-all"})

    assert answer.status_code == 404
    assert answer.json() == {
        "error": "not_found",
        "message": "no user named 'nobody-at-all'",
        "details": ["user"],
    }


def test_a_huge_authorization_header_is_refused_without_a_500(secured: Secured) -> None:
    for size in (4_000, 60_000):
        answer = _call(secured, "GET", "/all", "x" * size)
        assert answer.status_code in (400, 401, 431), answer.status_code


def _cli(s: Secured, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", "auth", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**settings_environ(s.settings)},
    )


def test_the_cli_creates_a_user_and_a_token_that_the_api_accepts(secured: Secured) -> None:
    name = unique("frank")
    assert _cli(secured, "user", "add", name, "--role", "ops").returncode == 0

    created = _cli(secured, "token", "create", name, "--label", "ci")
    token = created.stdout.strip()

    assert created.returncode == 0 and token.startswith("kst_")
    assert _call(secured, "GET", "/all?limit=1", token).status_code == 200
    listed = _cli(secured, "token", "list", "--user", name).stdout
    assert token.partition(".")[0].removeprefix("kst_") in listed and token not in listed


def _said(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines on stderr besides the one that says which stack it talks to (docs/cli.md)."""
    return [line for line in done.stderr.splitlines() if "auth: using " not in line]


def test_the_cli_lists_and_removes_users_and_revokes_a_token_the_api_then_refuses(
    secured: Secured,
) -> None:
    name = unique("hank")
    assert _cli(secured, "user", "add", name, "--role", "ops").returncode == 0
    token = _cli(secured, "token", "create", name, "--label", "ci").stdout.strip()
    token_id = token.removeprefix("kst_").partition(".")[0]
    assert _call(secured, "GET", "/all?limit=1", token).status_code == 200

    users = _cli(secured, "user", "list")
    assert users.returncode == 0, users.stderr
    [user] = [u for u in map(json.loads, users.stdout.splitlines()) if u["name"] == name]
    assert user["roles"] == ["ops"]

    revoked = _cli(secured, "token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert _said(revoked) == [f"revoked token {token_id}"]
    [listed] = map(json.loads, _cli(secured, "token", "list", "--user", name).stdout.splitlines())
    assert (listed["id"], listed["label"]) == (token_id, "ci") and listed["revoked_at"]
    revoked_at = time.monotonic()
    bound = authstore.revocation_bound(secured.settings.auth_cache_ttl)
    while _call(secured, "GET", "/all?limit=1", token).status_code != 401:
        assert time.monotonic() - revoked_at <= bound
        time.sleep(0.05)
    assert _cli(secured, "token", "revoke", token_id).returncode == 0  # again: nothing changes

    removed = _cli(secured, "user", "remove", name)
    assert removed.returncode == 0, removed.stderr
    assert _said(removed) == [f"removed user {name!r} and their tokens"]
    assert name not in _cli(secured, "user", "list").stdout
    assert _cli(secured, "token", "list", "--user", name).stdout == ""  # went with the user


EXPIRY = "must be more than 0 s and at most 10 years"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--expires-in", "0"), f"argument --expires-in: {EXPIRY}: '0'"),
        (("--expires-in", "-1"), f"argument --expires-in: {EXPIRY}: '-1'"),
        (("--expires-in=-0.5",), f"argument --expires-in: {EXPIRY}: '-0.5'"),
        (("--expires-in", "nan"), f"argument --expires-in: {EXPIRY}: 'nan'"),
        (("--expires-in", "1e12"), f"argument --expires-in: {EXPIRY}: '1e12'"),
        (("--expires-in", "soon"), "argument --expires-in: not a number of seconds: 'soon'"),
        (("--label", "l" * 201), "label is longer than 200 characters"),
        (("--label", "l" * 100_000), "label is longer than 200 characters"),
    ],
)
def test_a_bad_expiry_or_label_on_the_cli_is_one_clear_line_exit_2_and_no_token(
    secured: Secured, args: tuple[str, ...], said: str
) -> None:
    user = f"bob-{secured.category}"
    tokens = authstore.list_tokens(secured.settings.database_url, user)

    done = _cli(secured, "token", "create", user, *args)

    assert done.returncode == 2, done.stderr
    assert _said(done)[-1].endswith(said), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert authstore.list_tokens(secured.settings.database_url, user) == tokens


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("user", "add", "x" * 129), "name must be 1-128 characters"),
        (("user", "add", "x" * 100_000), "name must be 1-128 characters"),
        (("user", "remove", "x" * 100_000), "name must be 1-128 characters"),
        (("token", "create", "x" * 100_000), "user must be 1-128 characters"),
        (("token", "list", "--user", "x" * 100_000), "user must be 1-128 characters"),
        (("token", "revoke", "f" * 100_000), "a token id is 12 hex digits"),
    ],
)
def test_a_huge_name_on_the_cli_is_one_clear_line_and_exit_2(
    secured: Secured, args: tuple[str, ...], said: str
) -> None:
    done = _cli(secured, *args)

    assert done.returncode == 2, done.stderr
    [line] = _said(done)
    assert line.startswith(f"kafkastore auth: {said}") and len(line) < 200, line
    assert done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("user", "add", ""),
        ("user", "add", "has space"),
        ("user", "remove", "nobody-here"),
        ("token", "create", "nobody-here"),
        ("token", "revoke", "not-hex"),
        ("token", "revoke", "0123456789ab"),
    ],
)
def test_bad_input_on_the_cli_is_one_clear_line_and_exit_2(
    secured: Secured, args: tuple[str, ...]
) -> None:
    done = _cli(secured, *args)

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kafkastore auth: ")
    assert "Traceback" not in done.stderr


def test_a_duplicate_user_on_the_cli_is_one_clear_line(secured: Secured) -> None:
    name = unique("gina")
    assert _cli(secured, "user", "add", name).returncode == 0

    again = _cli(secured, "user", "add", name)

    assert again.returncode == 2
    # Besides the line that says which stack the command talks to (docs/cli.md), one line.
    said = [line for line in again.stderr.splitlines() if "auth: using " not in line]
    assert said == [f"kafkastore auth: user {name!r} already exists"]


def test_no_token_or_hash_appears_in_the_server_log(secured: Secured) -> None:
    for who in ("alice", "bob", "revoked", "expired", "admin"):
        _call(secured, "GET", f"/streams/{secured.category}-1", who)
    log = secured.log_path.read_text(errors="replace")

    assert "Application startup complete" in log or "Uvicorn running" in log
    for token in secured.tokens.values():
        secret = token.partition(".")[2]
        assert secret not in log
        assert authstore.auth.token_hash(token).hex() not in log
