"""The access decision, tokens and the route table, without services (docs/http.md "Security")."""

from __future__ import annotations

import hmac
import time
from typing import Any

import orjson
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from kafkastore import auth, auth_http
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError, Forbidden, Unauthorized
from kafkastore.http import create_app, error_response

ALICE = auth.Principal("alice")
BOB = auth.Principal("bob")
OPS = auth.Principal("olga", frozenset({"ops"}))
ADMIN = auth.Principal("root", frozenset({"admin"}))

POLICY = auth.Policy.parse(
    '{"read": ["$authenticated"], "write": ["$authenticated"]}',
    '{"Secret": {"read": ["alice"], "write": ["alice", "$ops"]}}',
)


def _may(principal: auth.Principal, action: str, resource: auth.Resource, **kw: Any) -> bool:
    return auth.decide(principal, action, resource, POLICY.acls(resource, **kw))


def test_the_category_default_wins_over_the_global_default() -> None:
    secret, public = auth.Resource("stream", "Secret-1"), auth.Resource("stream", "Public-1")

    assert _may(ALICE, auth.READ, secret)
    assert not _may(BOB, auth.READ, secret)
    assert _may(BOB, auth.READ, public)
    assert not _may(BOB, auth.WRITE, secret)


def test_an_action_the_category_acl_does_not_name_falls_back_to_the_global_default() -> None:
    policy = auth.Policy.parse('{"delete": ["bob"]}', '{"Secret": {"read": ["alice"]}}')
    secret = auth.Resource("stream", "Secret-1")

    assert auth.decide(BOB, auth.DELETE, secret, policy.acls(secret))
    assert not auth.decide(ALICE, auth.DELETE, secret, policy.acls(secret))


def test_a_stream_acl_wins_over_the_category_default() -> None:
    secret = auth.Resource("stream", "Secret-1")
    stream_acl = auth.Acl.parse({"read": ["bob"]})

    assert _may(BOB, auth.READ, secret, stream_acl=stream_acl)
    assert not _may(ALICE, auth.READ, secret, stream_acl=stream_acl)
    assert _may(ALICE, auth.WRITE, secret, stream_acl=stream_acl)  # write: the category's


def test_category_reads_need_read_on_the_category() -> None:
    category = auth.Resource("category", "Secret")

    assert _may(ALICE, auth.READ, category)
    assert not _may(BOB, auth.READ, category)


def test_role_shortcuts_admin_everything_ops_every_read_all_and_metrics() -> None:
    secret = auth.Resource("stream", "Secret-1")

    assert _may(ADMIN, auth.DELETE, secret)
    assert _may(ADMIN, auth.ADMIN, auth.SYSTEM)
    assert _may(OPS, auth.READ, secret)
    assert _may(OPS, auth.METADATA_READ, secret)
    assert _may(OPS, auth.WRITE, secret)  # granted by "$ops" in the category ACL
    assert not _may(OPS, auth.DELETE, secret)
    assert _may(OPS, auth.READ, auth.ALL) and _may(OPS, auth.OPS, auth.SYSTEM)
    assert not _may(OPS, auth.ADMIN, auth.SYSTEM)
    assert not _may(ALICE, auth.READ, auth.ALL)
    assert not _may(ALICE, auth.OPS, auth.SYSTEM)


def test_the_built_in_global_default_lets_users_read_and_write_and_admins_delete() -> None:
    policy = auth.Policy()
    stream = auth.Resource("stream", "Order-1")

    assert auth.decide(BOB, auth.READ, stream, policy.acls(stream))
    assert auth.decide(BOB, auth.WRITE, stream, policy.acls(stream))
    assert not auth.decide(BOB, auth.DELETE, stream, policy.acls(stream))
    assert not auth.decide(BOB, auth.METADATA_WRITE, stream, policy.acls(stream))


@pytest.mark.parametrize(
    ("default", "categories"),
    [("{", ""), ('{"rread": []}', ""), ('{"read": "alice"}', ""), ("", "[]")],
)
def test_a_malformed_acl_setting_is_a_configuration_error(default: str, categories: str) -> None:
    with pytest.raises(ConfigurationError):
        auth.Policy.parse(default, categories)


def _snapshot(token_id: str, token: str, *, expires_at: float | None = None) -> auth.Snapshot:
    cached = auth.CachedToken(auth.token_hash(token), ALICE, expires_at)
    return auth.Snapshot({token_id: cached}, time.monotonic())


def test_tokens_are_random_256_bit_strings_stored_as_sha256() -> None:
    tokens = {auth.new_token()[1] for _ in range(100)}
    token_id, token = auth.new_token()

    assert len(tokens) == 100
    assert auth.token_id_of(token) == token_id
    assert len(auth.token_hash(token)) == 32
    assert len(token.partition(".")[2]) == 43  # 32 bytes of token_urlsafe


def test_a_token_is_compared_with_its_hash_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_id, token = auth.new_token()
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    snapshot = _snapshot(token_id, token)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")

    assert snapshot.authenticate(token) == ALICE
    assert snapshot.authenticate(forged) is None
    assert len(calls) == 2


def test_malformed_unknown_and_expired_tokens_authenticate_no_one() -> None:
    token_id, token = auth.new_token()
    _, other = auth.new_token()
    snapshot = _snapshot(token_id, token, expires_at=time.time() + 60)

    assert snapshot.authenticate(token) == ALICE
    assert snapshot.authenticate(token, now=time.time() + 61) is None
    assert snapshot.authenticate(other) is None
    for bad in ("", "kst_", token + "x", "x" * 10_000, token.replace("kst_", "kst-")):
        assert snapshot.authenticate(bad) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), ("", None), ("Basic abc", None), ("Bearer ", None), ("bearer t", "t")],
)
def test_only_a_bearer_header_carries_a_token(header: str | None, token: str | None) -> None:
    assert auth.bearer(header) == token


def test_every_route_of_the_app_has_a_row_in_the_access_table() -> None:
    app = create_app(Settings.from_env({}, auth="on"))
    contexts = [
        c for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)
    ]
    routes = [(m, c.path) for c in contexts for m in c.original_route.methods]  # type: ignore[attr-defined]

    missing = [r for r in routes if r not in auth_http.ACCESS]
    assert missing == [], f"add these routes to kafkastore.auth_http.ACCESS: {missing}"
    # The dependency sees the path a route declares: routers are included without a prefix.
    assert all(c.path == c.original_route.path for c in contexts)  # type: ignore[attr-defined]
    assert len(routes) >= 10


def test_the_openapi_document_lists_401_and_403_and_the_bearer_scheme() -> None:
    app = create_app(Settings.from_env({}, auth="on"))
    doc = app.openapi()

    append = doc["paths"]["/streams/{stream_id}"]["post"]
    assert {"401", "403"} <= set(append["responses"])
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert "401" not in doc["paths"]["/healthz"]["get"]["responses"]


def test_401_carries_www_authenticate_and_403_names_nothing() -> None:
    unauthorized, forbidden = error_response(Unauthorized()), error_response(Forbidden())

    assert unauthorized.status_code == 401
    assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")
    assert orjson.loads(bytes(unauthorized.body)) == {
        "error": "unauthorized",
        "message": "a valid bearer token is required",
    }
    assert forbidden.status_code == 403
    assert orjson.loads(bytes(forbidden.body)) == {"error": "forbidden", "message": "access denied"}


@pytest.mark.parametrize("value", ["maybe", "enabled"])
def test_auth_is_on_or_off(value: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({"KAFKASTORE_AUTH": value})


def test_auth_is_off_unless_configured_and_on_with_kafkastore_auth_on() -> None:
    assert not Settings.from_env({}).auth_enabled
    assert Settings.from_env({"KAFKASTORE_AUTH": "on"}).auth_enabled


def test_no_open_path_but_healthz_is_said_with_healthz_never_with_an_empty_value() -> None:
    closed = Settings.from_env({"KAFKASTORE_AUTH_OPEN_PATHS": "/healthz"})
    # An empty variable is the default, as for every setting (docs/configuration.md) ...
    default = Settings.from_env({"KAFKASTORE_AUTH_OPEN_PATHS": ""})

    assert closed.open_paths == {"/healthz"}
    assert default.open_paths == Settings().open_paths >= {"/readyz", "/openapi.json"}
    # ... so an empty value in Python, which another process would read as the default, is
    # refused rather than meaning something else here.
    for empty in ("", " ", ","):
        with pytest.raises(ConfigurationError, match="give /healthz"):
            Settings.from_env({}, auth_open_paths=empty)


def test_a_certificate_without_its_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({}, tls_certfile="/tmp/cert.pem")


def test_routes_of_included_routers_are_checked_too() -> None:
    client = TestClient(
        create_app(Settings.from_env({}, auth="on", database_url="postgresql://x@127.0.0.1:1/x"))
    )

    for path in ("/all", "/streams/Order-1", "/auth/users", "/metrics"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert answer.json()["error"] == "unauthorized"
    assert client.get("/healthz").status_code == 200
