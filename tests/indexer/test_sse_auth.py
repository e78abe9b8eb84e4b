"""Live subscriptions with auth on (docs/http.md "Security"): 401/403 like the reads they follow,
per-stream read ACLs applied to every event a category or ``$all`` feed sends, and a revoked
token or a lost right ending a feed, also an idle one (at its next heartbeat)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafkastore import authstore
from kafkastore.config import Settings
from tests.indexer.sse_client import Message, events, subscribe
from tests.support import ServiceProcess, unique
from tests.support.serving import CALLERS, serve_process, serving, users_with_tokens
from tests.support.topics import own_settings


@dataclass(frozen=True)
class Secured:
    url: str
    tokens: dict[str, str]
    category: str
    """alice (and admins/ops) may read it, bob may not (a category default ACL)."""
    names: dict[str, str]
    log_path: Path
    settings: Settings


@pytest.fixture(scope="module")
def secured(kafka_bootstrap: str, database_url: str, logs_dir: Path) -> Iterator[Secured]:
    category = unique("Vault").replace("-", "")
    names = {who: f"{who}-{category}" for who in CALLERS}
    settings = own_settings(
        kafka_bootstrap,
        database_url,
        auth="on",
        auth_category_acls=f'{{"{category}": {{"read": ["{names["alice"]}"]}}}}',
    )
    tokens = users_with_tokens(database_url, CALLERS, category)
    log_path = logs_dir / f"sse-auth-{category}.log"
    with serving(settings, log_path) as url:
        yield Secured(url, tokens, category, names, log_path, settings)


def bearer(s: Secured, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.tokens[who]}"}


def append(s: Secured, stream: str, *types: str) -> None:
    body = {"events": [{"type": t, "data": {"t": t}} for t in types]}
    answer = httpx.post(f"{s.url}/streams/{stream}", json=body, headers=bearer(s, "admin"))
    assert answer.status_code == 201, answer.text


def set_read_acl(s: Secured, stream: str, readers: list[str]) -> None:
    answer = httpx.put(
        f"{s.url}/streams/{stream}/metadata",
        json={"expected_metadata_version": 0, "acl": {"read": readers}},
        headers=bearer(s, "admin"),
    )
    assert answer.status_code == 200, answer.text


def status(s: Secured, path: str, who: str | None) -> httpx.Response:
    """The answer's head (and its body unless it is the endless 200 event stream)."""
    headers = bearer(s, who) if who else {}
    with httpx.stream("GET", s.url + path, headers=headers, timeout=30) as answer:
        if answer.status_code != 200:
            answer.read()
        return answer


@pytest.mark.parametrize(
    ("path", "refused", "allowed"),
    [
        ("/subscribe/all", "alice", "ops"),
        ("/subscribe/categories/{category}", "bob", "alice"),
        ("/subscribe/streams/{category}-1", "bob", "alice"),
    ],
)
def test_a_subscription_needs_what_the_same_read_needs(
    secured: Secured, path: str, refused: str, allowed: str
) -> None:
    path = path.format(category=secured.category)
    missing = status(secured, path, None)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["error"] == "unauthorized"
    bad = httpx.get(secured.url + path, headers={"Authorization": "Bearer kst_nope"}, timeout=30)
    assert bad.status_code == 401
    forbidden = status(secured, path, refused)
    assert (forbidden.status_code, forbidden.json()["error"]) == (403, "forbidden")
    assert status(secured, path, allowed).status_code == 200
    assert status(secured, path, "admin").status_code == 200


def _follow(s: Secured, path: str, who: str, count: int, out: list[Message]) -> None:
    with subscribe(s.url + path, headers=bearer(s, who), timeout=60) as feed:
        out.extend(events(feed, count))


def test_a_category_feed_leaves_out_the_events_of_streams_the_caller_may_not_read(
    secured: Secured,
) -> None:
    category = unique("Shared").replace("-", "")  # readable by every authenticated user
    private, public = f"{category}-private", f"{category}-public"
    set_read_acl(secured, private, [secured.names["alice"]])
    seen: dict[str, list[Message]] = {"alice": [], "bob": []}
    followers = [
        threading.Thread(
            target=_follow,
            args=(secured, f"/subscribe/categories/{category}", who, count, seen[who]),
        )
        for who, count in (("alice", 4), ("bob", 2))
    ]
    for t in followers:
        t.start()
    time.sleep(1.0)  # both at the head (the catch-up of an empty category)
    append(secured, private, "Secret1")
    append(secured, public, "Open1")
    append(secured, private, "Secret2")
    append(secured, public, "Open2")
    for t in followers:
        t.join(60)
    assert [m.event["type"] for m in seen["alice"]] == ["Secret1", "Open1", "Secret2", "Open2"]
    assert [m.event["type"] for m in seen["bob"]] == ["Open1", "Open2"]
    assert {m.event["stream_id"] for m in seen["bob"]} == {public}


def test_an_acl_change_applies_to_a_feed_already_open(secured: Secured) -> None:
    category = unique("Turning").replace("-", "")
    stream = f"{category}-1"
    append(secured, stream, "Before")
    got: list[Message] = []
    follower = threading.Thread(
        target=_follow, args=(secured, f"/subscribe/categories/{category}", "bob", 2, got)
    )
    follower.start()
    time.sleep(1.0)
    set_read_acl(secured, stream, [secured.names["alice"]])
    time.sleep(1.5)  # auth_stream_acl_ttl (1 s) bounds it even without the notification
    append(secured, stream, "Hidden")
    append(secured, f"{category}-2", "Visible")
    follower.join(60)
    assert [m.event["type"] for m in got] == ["Before", "Visible"]


def test_a_revoked_token_ends_the_feed(secured: Secured, database_url: str) -> None:
    info, token = authstore.create_token(database_url, secured.names["alice"])
    stream = f"{secured.category}-{unique('Revoked')}"
    append(secured, stream, "First")
    headers = {"Authorization": f"Bearer {token}"}
    with subscribe(f"{secured.url}/subscribe/streams/{stream}", headers=headers) as feed:
        (first,) = events(feed, 1)
        authstore.revoke_token(database_url, info.id)
        time.sleep(3.0)  # the token cache's bound (2 s)
        append(secured, stream, "AfterRevocation")
        rest: list[Any] = [m for m in feed if m.data is not None]  # ends: the server closes it
    assert first.event["type"] == "First"
    assert rest == []
    log = secured.log_path.read_text()
    assert "SSE subscription of" in log and "ended: a valid bearer token is required" in log


HEARTBEAT = 1.0
"""``KAFKASTORE_SSE_HEARTBEAT`` of the API below (a user may set it as low)."""
BOUND = HEARTBEAT + 2.0 + 3.0
"""A change is enforced within the heartbeat plus the caches' bound (auth_cache_ttl and
auth_stream_acl_ttl, 1 s, and the token cache's reload), plus slack for a loaded machine."""


@dataclass(frozen=True)
class Quick:
    url: str
    log: ServiceProcess


@pytest.fixture(scope="module")
def quick(secured: Secured, logs_dir: Path) -> Iterator[Quick]:
    """A second API of the same store, with heartbeats every second."""
    api, url = serve_process(
        secured.settings.replace(sse_heartbeat=HEARTBEAT),
        logs_dir / f"sse-auth-heartbeat-{secured.category}.log",
    )
    with api:
        yield Quick(url, api)


def _ends_within(feed: Iterator[Message], seconds: float) -> tuple[float | None, list[Message]]:
    """After how many seconds the server ended ``feed`` (None: still open after ``seconds``),
    and the events it sent meanwhile."""
    started = time.monotonic()
    sent: list[Message] = []
    for message in feed:
        if message.data is not None:
            sent.append(message)
        if time.monotonic() - started > seconds:
            return None, sent
    return time.monotonic() - started, sent


def _idle_at_the_head(feed: Iterator[Message]) -> None:
    """Wait for the first heartbeat: the feed caught up and is idle."""
    for message in feed:
        assert message.data is None
        if message.comment == "heartbeat":
            return


def test_a_revoked_token_ends_an_idle_feed_at_its_next_heartbeat(
    secured: Secured, quick: Quick, database_url: str
) -> None:
    info, token = authstore.create_token(database_url, secured.names["alice"])
    headers = {"Authorization": f"Bearer {token}"}
    stream = f"{secured.category}-{unique('Idle')}"
    with subscribe(f"{quick.url}/subscribe/streams/{stream}", headers=headers) as feed:
        _idle_at_the_head(feed)
        authstore.revoke_token(database_url, info.id)
        took, sent = _ends_within(feed, BOUND)
    assert took is not None, f"the feed was still open {BOUND} s after the revocation"
    assert sent == []
    assert "ended: a valid bearer token is required" in quick.log.log(200)


def test_an_idle_stream_feed_ends_when_its_caller_loses_read(
    secured: Secured, quick: Quick
) -> None:
    stream = f"{secured.category}-{unique('Losing')}"
    append(secured, stream, "Before")
    headers = bearer(secured, "alice")
    with subscribe(f"{quick.url}/subscribe/streams/{stream}", headers=headers) as feed:
        (first,) = events(feed, 1)
        _idle_at_the_head(feed)
        set_read_acl(secured, stream, [secured.names["bob"]])  # alice no longer
        took, sent = _ends_within(feed, BOUND)
    assert first.event["type"] == "Before"
    assert took is not None, f"the feed was still open {BOUND} s after the ACL change"
    assert sent == []
    assert "ended: access denied" in quick.log.log(200)
    assert status(secured, f"/subscribe/streams/{stream}", "alice").status_code == 403
