"""Stream ACLs enforced by a ``kafkastore serve`` with auth on (docs/http.md "Security"): the
``acl`` of a stream's metadata over its category's default over the global default, changed
through ``PUT /streams/{id}/metadata`` (which needs ``metadata_write``), enforced for the next
request, within milliseconds when changed by another process (NOTIFY) and within
``auth_stream_acl_ttl`` when that notification is lost; refusals look like a missing stream's,
also on a tombstone."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from kafkastore.lifecycle import parse_metadata
from tests.kafkastore.test_auth_http import FORBIDDEN, Secured, _call, _event, _version, secured
from tests.support import unique
from writer import lifecycle

__all__ = ["secured"]

TTL = 1.0
"""The default ``auth_stream_acl_ttl`` (the fixture's server runs with the defaults)."""


def _user(s: Secured, who: str) -> str:
    return f"{who}-{s.category}"


def _set_acl(
    s: Secured, stream_id: str, acl: dict[str, list[str]], who: str = "admin"
) -> httpx.Response:
    return _call(s, "PUT", f"/streams/{stream_id}/metadata", who, {"acl": acl})


def _metadata(s: Secured, stream_id: str) -> Any:
    return _call(s, "GET", f"/streams/{stream_id}/metadata", "admin").json()


def test_the_server_runs_with_the_default_stream_acl_ttl(secured: Secured) -> None:
    assert secured.settings.auth_stream_acl_ttl == TTL


def test_a_stream_acl_wins_over_the_category_default(secured: Secured) -> None:
    # The category default grants read and write to alice only; the stream's ACL to bob only.
    stream = f"{secured.category}-owned"
    acl = {"read": [_user(secured, "bob")], "write": [_user(secured, "bob")]}
    assert _set_acl(secured, stream, acl).status_code == 200

    assert _call(secured, "POST", f"/streams/{stream}", "bob", _event()).status_code == 201
    refused = _call(secured, "POST", f"/streams/{stream}", "alice", _event())
    assert (refused.status_code, refused.json()) == (403, FORBIDDEN)
    assert _version(secured, stream) == 1  # nothing appended by the refusal
    assert _call(secured, "GET", f"/streams/{stream}", "bob").status_code == 200
    assert _call(secured, "GET", f"/streams/{stream}", "alice").status_code == 403


def test_a_stream_acl_wins_over_the_global_default_and_defers_what_it_does_not_name(
    secured: Secured,
) -> None:
    # The global default lets every authenticated user read and write; this ACL names write only.
    stream = unique("Open")
    assert _set_acl(secured, stream, {"write": [_user(secured, "alice")]}).status_code == 200

    refused = _call(secured, "POST", f"/streams/{stream}", "bob", _event())
    assert (refused.status_code, refused.json()) == (403, FORBIDDEN)
    body = {
        "appends": [{"stream_id": unique("Open"), **_event()}, {"stream_id": stream, **_event()}]
    }
    assert _call(secured, "POST", "/append", "bob", body).status_code == 403
    assert _version(secured, stream) == 0
    assert _call(secured, "POST", f"/streams/{stream}", "alice", _event()).status_code == 201
    assert _call(secured, "POST", "/append", "alice", body).status_code == 201
    assert _call(secured, "GET", f"/streams/{stream}", "bob").status_code == 200  # read: default


def test_changing_an_acl_needs_metadata_write(secured: Secured) -> None:
    stream = unique("Open")
    assert _call(secured, "POST", f"/streams/{stream}", "bob", _event()).status_code == 201
    assert _set_acl(secured, stream, {"read": [_user(secured, "alice")]}).status_code == 200
    before = _metadata(secured, stream)

    refused = _set_acl(secured, stream, {"read": [_user(secured, "bob")]}, who="bob")

    assert (refused.status_code, refused.json()) == (403, FORBIDDEN)
    assert _metadata(secured, stream) == before
    assert _call(secured, "GET", f"/streams/{stream}", "bob").status_code == 403

    # A stream ACL may grant metadata_write itself.
    grant = {"metadata_write": [_user(secured, "bob")], "read": [_user(secured, "alice")]}
    assert _set_acl(secured, stream, grant).status_code == 200
    assert (
        _set_acl(secured, stream, {"read": [_user(secured, "bob")]}, who="bob").status_code == 200
    )
    assert _call(secured, "GET", f"/streams/{stream}", "bob").status_code == 200


def test_an_acl_change_through_the_api_is_enforced_for_the_next_request(secured: Secured) -> None:
    stream = unique("Open")
    assert _call(secured, "POST", f"/streams/{stream}", "bob", _event()).status_code == 201

    for _ in range(3):
        assert _set_acl(secured, stream, {"write": [_user(secured, "alice")]}).status_code == 200
        assert _call(secured, "POST", f"/streams/{stream}", "bob", _event()).status_code == 403
        assert _set_acl(secured, stream, {"write": [_user(secured, "bob")]}).status_code == 200
        assert _call(secured, "POST", f"/streams/{stream}", "bob", _event()).status_code == 201


def _seconds_until_refused(s: Secured, stream: str, change: Any) -> tuple[float, float]:
    """(seconds from just before the API cached the stream's ACL, seconds from the change)
    until the API refuses bob."""
    cached_before = time.monotonic()
    assert _call(s, "GET", f"/streams/{stream}/state", "bob").status_code == 200  # now cached
    change()
    changed_at = time.monotonic()
    while _call(s, "GET", f"/streams/{stream}/state", "bob").status_code != 403:
        assert time.monotonic() - changed_at <= TTL + 1.0, "the change was never enforced"
        time.sleep(0.01)
    now = time.monotonic()
    return now - cached_before, now - changed_at


def test_an_acl_change_by_another_process_is_enforced_by_notify_well_within_the_ttl(
    secured: Secured,
) -> None:
    stream = unique("Open")
    assert _call(secured, "POST", f"/streams/{stream}", "alice", _event()).status_code == 201
    acl = {"acl": {"read": [_user(secured, "alice")]}}

    def change() -> None:
        # Another process's metadata write, reduced to its row update (milliseconds even on a
        # loaded machine): the table's trigger sends the NOTIFY whoever writes the row.
        with psycopg.connect(secured.settings.database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE streams SET metadata = %s WHERE stream_id = %s", (Jsonb(acl), stream)
            )

    since_cached, _ = _seconds_until_refused(secured, stream, change)
    # The cached entry could not have expired yet: only the notification can have dropped it.
    assert since_cached < TTL


def test_an_acl_change_by_the_writer_of_another_process_is_enforced(secured: Secured) -> None:
    stream = unique("Open")
    assert _call(secured, "POST", f"/streams/{stream}", "alice", _event()).status_code == 201
    update = parse_metadata({"acl": {"read": [_user(secured, "alice")]}})

    def change() -> None:
        lifecycle.set_metadata(secured.settings, stream, update)  # this process, not the API's

    _, since_change = _seconds_until_refused(secured, stream, change)
    assert since_change <= TTL + 0.3


def test_an_acl_change_whose_notification_is_lost_is_enforced_within_the_ttl(
    secured: Secured,
) -> None:
    stream = unique("Open")
    assert _call(secured, "POST", f"/streams/{stream}", "alice", _event()).status_code == 201

    def change_without_notify() -> None:
        with psycopg.connect(secured.settings.database_url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")  # no trigger fires
            conn.execute(
                "UPDATE streams SET metadata = %s WHERE stream_id = %s",
                (Jsonb({"acl": {"read": [_user(secured, "alice")]}}), stream),
            )

    _, since_change = _seconds_until_refused(secured, stream, change_without_notify)
    assert since_change <= TTL + 0.3


def test_a_refusal_on_a_stream_with_an_acl_looks_like_one_on_a_missing_stream(
    secured: Secured,
) -> None:
    # bob is refused by the category default on a missing stream, by the ACL on the other two.
    guarded, missing = f"{secured.category}-guarded", f"{secured.category}-{unique('never')}"
    alice = [_user(secured, "alice")]
    acl = {"read": alice, "write": alice, "metadata_read": alice}
    assert _set_acl(secured, guarded, acl).status_code == 200
    assert _call(secured, "POST", f"/streams/{guarded}", "alice", _event()).status_code == 201
    tombstoned = unique("Open")
    assert _set_acl(secured, tombstoned, acl).status_code == 200
    assert _call(secured, "POST", f"/streams/{tombstoned}", "alice", _event()).status_code == 201
    deleted = _call(secured, "DELETE", f"/streams/{tombstoned}?hard=true", "admin")
    assert deleted.status_code == 204

    for suffix, method, body in (
        ("", "GET", None),
        ("/state", "GET", None),
        ("", "POST", _event()),
    ):
        answers = {
            (a.status_code, a.text)
            for sid in (guarded, missing, tombstoned)
            for a in [_call(secured, method, f"/streams/{sid}{suffix}", "bob", body)]
        }
        assert answers == {(403, httpx.Response(403, json=FORBIDDEN).text)}, suffix

    # The ACLs name metadata_read, the category default does not (the global default grants it).
    for sid in (guarded, tombstoned):
        refused = _call(secured, "GET", f"/streams/{sid}/metadata", "bob")
        assert (refused.status_code, refused.json()) == (403, FORBIDDEN)

    # Those the tombstone's last ACL names learn it is gone; nobody can write to it.
    assert _call(secured, "GET", f"/streams/{tombstoned}", "alice").status_code == 410
    assert _call(secured, "GET", f"/streams/{tombstoned}/metadata", "admin").status_code == 410
    assert _call(secured, "POST", f"/streams/{tombstoned}", "alice", _event()).status_code == 410
