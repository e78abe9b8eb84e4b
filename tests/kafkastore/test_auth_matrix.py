"""The routes :mod:`tests.kafkastore.test_auth_http` leaves out (stream lifecycle, live
subscriptions, the console's API), each against every kind of caller with exact statuses and
bodies and nothing changed by a refusal; category reads against per-stream ACLs; the CLI's
HTTP commands with a token; and no token or hash in the logs of the API, the indexer and the
CLI (docs/http.md "Security")."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafkastore import auth, authstore
from kafkastore.config import Settings, settings_environ
from tests.kafkastore.test_auth_http import FORBIDDEN, UNAUTHORIZED
from tests.support import unique
from tests.support.serving import CALLERS, serving, spoiled_tokens, users_with_tokens
from tests.support.topics import own_settings

BAD = "kst_0123456789ab." + "A" * 43


@dataclass(frozen=True)
class Served:
    url: str
    settings: Settings
    tokens: dict[str, str]
    users: dict[str, str]
    logs: list[Path]
    cli_output: list[str]
    locked: str
    """A category only alice may read (its default ACL)."""


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, database_url: str, logs_dir: Path) -> Iterator[Served]:
    """``kafkastore serve`` and ``kafkastore indexer`` (own processes, own logs) with auth on."""
    tag = unique("m").replace("-", "")
    locked = f"Locked{tag}"
    settings = own_settings(
        kafka_bootstrap,
        database_url,
        auth="on",
        auth_category_acls=f'{{"{locked}": {{"read": ["alice-{tag}"]}}}}',
        dlq_handlers={"nobody": "json:loads"},  # a group without dead letters: replays nothing
    )
    users = {who: f"{who}-{tag}" for who in CALLERS}
    tokens = users_with_tokens(database_url, CALLERS, tag)
    tokens.update(spoiled_tokens(database_url, users["alice"]))
    api_log, indexer_log = logs_dir / f"matrix-serve-{tag}.log", logs_dir / f"matrix-ix-{tag}.log"
    with serving(settings, api_log, indexer_log=indexer_log) as url:
        time.sleep(1.0)  # the expired token is past its expiry
        yield Served(
            url,
            settings,
            tokens,
            users,
            [api_log, indexer_log],
            [],
            locked,
        )


def _call(s: Served, method: str, path: str, who: str | None, body: Any = None) -> httpx.Response:
    headers = {} if who is None else {"Authorization": f"Bearer {s.tokens.get(who, who)}"}
    if path.startswith("/subscribe/"):
        # A feed that is let in streams forever: its status and first bytes are the answer.
        with httpx.stream("GET", s.url + path, headers=headers, timeout=30) as answer:
            if answer.status_code == 200:
                return httpx.Response(200, headers=answer.headers)
            answer.read()
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )
    return httpx.request(method, s.url + path, json=body, headers=headers, timeout=30)


def _state(s: Served, stream: str) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was: head, metadata, latest snapshot."""
    state = _call(s, "GET", f"/streams/{stream}/state", "admin")
    metadata = _call(s, "GET", f"/streams/{stream}/metadata", "admin")
    snapshot = _call(s, "GET", f"/streams/{stream}/snapshots/latest", "admin")
    return state.status_code, state.text, metadata.text, snapshot.status_code, snapshot.text


@pytest.fixture(scope="module")
def guarded(served: Served) -> str:
    """A stream of the locked category whose own ACL grants every action to alice only, with
    two events."""
    stream = f"{served.locked}-{unique('g')}"
    acl = {key: [served.users["alice"]] for key in auth.ACL_ACTIONS}
    assert _call(served, "PUT", f"/streams/{stream}/metadata", "admin", {"acl": acl}).is_success
    body = {"events": [{"type": "T", "data": {}}, {"type": "T", "data": {}}]}
    assert _call(served, "POST", f"/streams/{stream}", "alice", body).status_code == 201
    read = _call(served, "GET", f"/streams/{stream}?min_version=2&timeout_ms=20000", "alice")
    assert read.status_code == 200 and len(read.json()["events"]) == 2
    return stream


def _routes(s: Served, stream: str) -> list[tuple[str, str, Any, str, str, int]]:
    """(method, path, body, caller without the right, caller with it, status when allowed)."""
    acl = {key: [s.users["alice"]] for key in auth.ACL_ACTIONS}
    category = stream.partition("-")[0]
    event_id = _call(s, "GET", f"/streams/{stream}", "admin").json()["events"][0]["id"]
    return [
        ("GET", f"/streams/{stream}/metadata", None, "bob", "alice", 200),
        ("PUT", f"/streams/{stream}/metadata", {"acl": acl}, "bob", "alice", 200),
        (
            "PUT",
            f"/streams/{stream}/snapshots",
            {"version": 1, "type": "S", "data": {}},
            "bob",
            "alice",
            201,
        ),
        ("GET", f"/streams/{stream}/snapshots/latest", None, "bob", "alice", 200),
        ("GET", f"/subscribe/streams/{stream}", None, "bob", "alice", 200),
        ("GET", f"/subscribe/categories/{category}", None, "bob", "alice", 200),
        ("GET", "/subscribe/all", None, "alice", "ops", 200),
        ("GET", "/console/api/overview", None, "alice", "ops", 200),
        ("GET", "/console/api/streams", None, "alice", "ops", 200),
        # alice may read the stream, yet the console's event route needs ops (any event by id)
        ("GET", f"/console/api/events/{event_id}", None, "alice", "ops", 200),
        ("GET", "/console/api/groups", None, "alice", "ops", 200),
        ("GET", "/console/api/groups/nobody/dead-letters", None, "alice", "ops", 200),
        ("POST", "/console/api/groups/nobody/dead-letters/replay", None, "ops", "admin", 200),
        ("DELETE", f"/streams/{stream}", None, "bob", "alice", 204),  # last: it deletes
    ]


def test_the_lifecycle_subscription_and_console_routes_refuse_bad_credentials_with_401(
    served: Served, guarded: str
) -> None:
    before = _state(served, guarded)
    for method, path, body, _, _, _ in _routes(served, guarded):
        for who in (None, BAD, "revoked", "expired", "not-a-token"):
            answer = _call(served, method, path, who, body)
            assert answer.status_code == 401, (method, path, who, answer.text)
            assert answer.json() == UNAUTHORIZED
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert _state(served, guarded) == before  # nothing appended, changed or deleted


def test_the_lifecycle_subscription_and_console_routes_refuse_403_and_allow_the_right(
    served: Served, guarded: str
) -> None:
    for method, path, body, without, with_right, status in _routes(served, guarded):
        before = _state(served, guarded)
        refused = _call(served, method, path, without, body)
        assert (refused.status_code, refused.json()) == (403, FORBIDDEN), (method, path)
        assert _state(served, guarded) == before, (method, path)
        allowed = _call(served, method, path, with_right, body)
        assert allowed.status_code == status, (method, path, allowed.text)
    assert _call(served, "GET", f"/streams/{guarded}", "alice").status_code == 404  # deleted


@pytest.fixture(scope="module")
def closed(kafka_bootstrap: str, database_url: str, logs_dir: Path) -> Iterator[Served]:
    """``kafkastore serve`` with auth on and no open path but ``/healthz``: only the routes
    that hold no data are open (``/readyz`` cannot tell readiness, so the log does)."""
    tag = unique("c").replace("-", "")
    settings = own_settings(kafka_bootstrap, database_url, auth="on", auth_open_paths="/healthz")
    users = {who: f"{who}-{tag}" for who in CALLERS}
    tokens = users_with_tokens(database_url, CALLERS, tag)
    tokens.update(spoiled_tokens(database_url, users["alice"]))
    log = logs_dir / f"closed-serve-{tag}.log"
    with serving(settings, log, ready_line="Application startup complete") as url:
        time.sleep(1.0)  # the expired token is past its expiry
        yield Served(url, settings, tokens, users, [log], [], "")


def test_with_no_open_paths_readyz_needs_ops_and_the_document_a_signed_in_user(
    closed: Served,
) -> None:
    for path, without in (("/readyz", "alice"), ("/openapi.json", None)):
        for who in (None, BAD, "revoked", "expired", "not-a-token"):
            answer = _call(closed, "GET", path, who)
            assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED), (path, who)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        if without is not None:
            refused = _call(closed, "GET", path, without)
            assert (refused.status_code, refused.json()) == (403, FORBIDDEN), path
    ready = _call(closed, "GET", "/readyz", "ops")
    for _ in range(300):  # until the indexer has its partitions
        if ready.status_code != 503:
            break
        time.sleep(0.1)
        ready = _call(closed, "GET", "/readyz", "ops")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready"), ready.text
    document = _call(closed, "GET", "/openapi.json", "bob")
    assert document.status_code == 200
    assert "/streams/{stream_id}" in document.json()["paths"]
    # The document of this app says so: /readyz needs the bearer scheme too.
    assert document.json()["paths"]["/readyz"]["get"]["security"] == [{"HTTPBearer": []}]


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/healthz", "application/json"),
        ("/docs", "text/html"),
        ("/redoc", "text/html"),
        ("/docs/oauth2-redirect", "text/html"),
        ("/console", "text/html"),
        ("/console/assets/console.js", "text/javascript"),
        ("/console/assets/console.css", "text/css"),
    ],
)
def test_the_routes_that_hold_no_data_answer_without_a_token_whatever_the_open_paths(
    closed: Served, path: str, media_type: str
) -> None:
    answer = _call(closed, "GET", path, None)

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(media_type)
    # The pages load what needs a token; they hold none of the store's data themselves.
    if path == "/docs":
        assert "/openapi.json" in answer.text


def _category_page(s: Served, category: str, who: str, **query: int) -> dict[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    answer = _call(s, "GET", f"/categories/{category}?{params}", who)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


def test_a_category_read_leaves_out_the_events_of_streams_whose_acl_denies_the_caller(
    served: Served,
) -> None:
    category = unique("Mixed").replace("-", "")
    public, private = f"{category}-public", f"{category}-private"
    alice = [served.users["alice"]]
    assert _call(
        served, "PUT", f"/streams/{private}/metadata", "admin", {"acl": {"read": alice}}
    ).is_success
    one = {"events": [{"type": "T", "data": {}}]}
    for stream in (public, private, public, private):
        assert _call(served, "POST", f"/streams/{stream}", "alice", one).status_code == 201
    assert _call(
        served, "GET", f"/streams/{private}?min_version=2&timeout_ms=20000", "alice"
    ).is_success

    streams = {
        who: [e["stream_id"] for e in _category_page(served, category, who)["events"]]
        for who in ("alice", "bob", "ops", "admin")
    }

    assert streams["alice"] == streams["ops"] == streams["admin"] == [public, private] * 2
    assert streams["bob"] == [public, public]
    # Paging one position at a time: bob's pages of private events are empty, yet every page
    # moves on, and he sees exactly the public events.
    last = max(e["global_position"] for e in _category_page(served, category, "alice")["events"])
    seen: list[str] = []
    position, empty_pages = 1, 0
    while position <= last:
        page = _category_page(served, category, "bob", from_position=position, limit=1)
        seen += [e["stream_id"] for e in page["events"]]
        empty_pages += not page["events"]
        assert page["next_position"] > position
        position = page["next_position"]
    assert seen == [public, public]
    assert empty_pages == 2
    # An ACL change is enforced for the next category read too.
    everyone = {"acl": {"read": ["$authenticated"]}}
    assert _call(served, "PUT", f"/streams/{private}/metadata", "admin", everyone).is_success
    bob_now = [e["stream_id"] for e in _category_page(served, category, "bob")["events"]]
    assert bob_now == [public, private] * 2


def _cli(s: Served, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**settings_environ(s.settings.replace(api_url=s.url))}
    if token is not None:
        env["KAFKASTORE_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    s.cli_output.extend((done.stdout, done.stderr))
    return done


def test_kafkastore_read_through_the_api_sends_the_token_and_exits_5_when_refused(
    served: Served, guarded: str
) -> None:
    stream = unique("CliRead")
    body = {"events": [{"type": "Read", "data": {"n": 1}}]}
    assert _call(served, "POST", f"/streams/{stream}", "bob", body).status_code == 201
    assert _call(
        served, "GET", f"/streams/{stream}?min_version=1&timeout_ms=20000", "bob"
    ).is_success

    allowed = _cli(served, "read", stream, "-v", token=served.tokens["bob"])
    flag = _cli(served, "read", stream, "--token", served.tokens["bob"])
    missing = _cli(served, "read", stream)
    bad = _cli(served, "read", stream, token=BAD)
    other = unique("Guarded")
    acl = {"acl": {"read": [served.users["alice"]]}}
    assert _call(served, "PUT", f"/streams/{other}/metadata", "admin", acl).is_success
    forbidden = _cli(served, "read", other, token=served.tokens["bob"])

    assert allowed.returncode == 0, allowed.stderr
    assert '"type":"Read"' in allowed.stdout.replace(" ", "")
    assert flag.returncode == 0 and flag.stdout == allowed.stdout
    assert missing.returncode == bad.returncode == forbidden.returncode == 5
    assert "KAFKASTORE_TOKEN" in missing.stderr and "Traceback" not in missing.stderr
    assert "forbidden" in forbidden.stderr
    for done in (allowed, flag, bad):
        assert served.tokens["bob"] not in done.stderr and BAD not in done.stderr


def test_kafkastore_tail_through_the_api_sends_the_token(served: Served) -> None:
    category = unique("CliTail").replace("-", "")
    body = {"events": [{"type": "Tailed", "data": {"n": 1}}]}
    assert _call(served, "POST", f"/streams/{category}-1", "ops", body).status_code == 201
    refused = _cli(served, "tail", "--api", served.url, "--category", category)
    assert refused.returncode == 5, refused.stderr

    env = {**settings_environ(served.settings), "KAFKASTORE_TOKEN": served.tokens["ops"]}
    argv = [sys.executable, "-m", "kafkastore.cli", "tail", "--api", served.url]
    proc = subprocess.Popen(
        [*argv, "--category", category, "--from-beginning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    served.cli_output.extend((line, err))
    assert f"{category}-1 v1 Tailed" in line
    assert served.tokens["ops"] not in err


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/auth/tokens/not-hex", None),
        ("DELETE", "/auth/tokens/%20", None),
        ("DELETE", "/auth/users/has%20space", None),
        ("GET", "/auth/tokens?user=has%20space", None),
        ("POST", "/auth/tokens", {"user": "x", "label": "l" * 201}),
        ("POST", "/auth/tokens", {"user": "x", "expires_in": "soon"}),
        ("POST", "/auth/users", {"name": "eve", "roles": "admin"}),
        ("POST", "/auth/users", {"name": "eve", "extra": 1}),
    ],
)
def test_more_bad_input_on_the_admin_routes_is_a_clear_400(
    served: Served, method: str, path: str, body: Any
) -> None:
    answer = _call(served, method, path, "admin", body)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"


def test_a_huge_or_malformed_authorization_header_is_a_clear_answer_never_a_500(
    served: Served,
) -> None:
    headers = [
        "Bearer " + "x" * 4_000,
        "Bearer " + "x" * 70_000,
        "Bearer kst_" + "0" * 12 + "." + "A" * 60_000,
        "Bearer kst_",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "x",
    ]
    for header in headers:
        answer = httpx.get(f"{served.url}/all", headers={"Authorization": header}, timeout=30)
        assert (answer.status_code, answer.json()) == (401, UNAUTHORIZED), header[:20]


def test_no_token_secret_or_hash_appears_in_the_logs_of_the_api_the_indexer_or_the_cli(
    served: Served,
) -> None:
    # Requests with every kind of token, through the API and the CLI, before the logs are read.
    for who in served.tokens:
        _call(served, "GET", "/all?limit=1", who)
        _cli(served, "read", unique("Logged"), "-v", token=served.tokens[who])
    texts = [path.read_text(errors="replace") for path in served.logs] + served.cli_output

    assert any("Uvicorn running" in t or "Application startup" in t for t in texts)
    assert any("assigned" in t for t in texts)  # the indexer's log is among them
    for token in served.tokens.values():
        secret, digest = token.partition(".")[2], auth.token_hash(token)
        for text in texts:
            assert secret not in text
            assert digest.hex() not in text and digest.hex().upper() not in text


def test_role_shortcuts_ops_reads_every_stream_admin_does_everything_over_http(
    served: Served,
) -> None:
    # A stream whose own ACL names alice only, for every action.
    stream = f"{served.locked}-{unique('roles')}"
    acl = {key: [served.users["alice"]] for key in auth.ACL_ACTIONS}
    assert _call(served, "PUT", f"/streams/{stream}/metadata", "admin", {"acl": acl}).is_success
    body = {"events": [{"type": "T", "data": {}}]}
    assert _call(served, "POST", f"/streams/{stream}", "admin", body).status_code == 201

    read = _call(served, "GET", f"/streams/{stream}?min_version=1&timeout_ms=20000", "ops")
    assert read.status_code == 200 and len(read.json()["events"]) == 1
    assert _call(served, "GET", f"/streams/{stream}/metadata", "ops").status_code == 200
    for method, path, payload in (
        ("POST", f"/streams/{stream}", body),
        ("PUT", f"/streams/{stream}/metadata", {"acl": acl}),
        ("DELETE", f"/streams/{stream}", None),
    ):
        refused = _call(served, method, path, "ops", payload)
        assert (refused.status_code, refused.json()) == (403, FORBIDDEN), (method, path)
    assert _call(served, "GET", f"/streams/{stream}/state", "admin").json()["version"] == 1
    assert _call(served, "POST", f"/streams/{stream}", "admin", body).status_code == 201
    assert _call(served, "DELETE", f"/streams/{stream}", "admin").status_code == 204


def test_refused_admin_requests_create_revoke_and_remove_nothing(served: Served) -> None:
    url = served.settings.database_url
    name = unique("victim")
    authstore.add_user(url, name)
    info, token = authstore.create_token(url, name)
    newcomer = unique("newcomer")
    requests = [
        ("POST", "/auth/users", {"name": newcomer, "roles": ["admin"]}),
        ("POST", "/auth/tokens", {"user": name}),
        ("DELETE", f"/auth/tokens/{info.id}", None),
        ("DELETE", f"/auth/users/{name}", None),
    ]

    for who in (None, BAD, "revoked", "expired", "alice", "ops"):
        for method, path, body in requests:
            answer = _call(served, method, path, who, body)
            assert answer.status_code == (401 if who in (None, BAD, "revoked", "expired") else 403)

    assert newcomer not in {u.name for u in authstore.list_users(url)}
    assert [(t.id, t.revoked_at) for t in authstore.list_tokens(url, name)] == [(info.id, None)]
    # 403, not 401: the token still authenticates.
    assert _call(served, "GET", "/all?limit=1", token).status_code == 403
