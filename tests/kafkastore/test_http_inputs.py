"""What the HTTP app refuses and how it answers: stream ids, categories with "/", filtered tails,
unknown query parameters, content types, and the messages of reused event ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kafkastore import pg
from kafkastore.config import Settings
from kafkastore.http import create_app
from tests.indexer.helpers import IndexerThread, running_indexer
from tests.support import unique
from tests.support.topics import module_settings


@pytest.fixture(scope="module")
def app_settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    yield from module_settings(kafka_bootstrap, database_url)


@pytest.fixture(scope="module")
def indexer(app_settings: Settings) -> Iterator[IndexerThread]:
    with running_indexer(app_settings) as ix:
        yield ix


@pytest.fixture(scope="module")
def client(app_settings: Settings, indexer: IndexerThread) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as c:
        yield c


def event(**overrides: Any) -> dict[str, Any]:
    return {"type": "Happened", "data": {"n": 1}, **overrides}


def stored(settings: Settings, stream: str) -> bool:
    with pg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM streams WHERE stream_id = %s", (stream,)).fetchone()
    return row is not None


def wait_indexed(client: TestClient, stream: str, version: int) -> None:
    read = client.get(f"/streams/{stream}", params={"min_version": version, "timeout_ms": 30000})
    assert read.status_code == 200 and "x-index-behind" not in read.headers


# -- stream ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    ["%20", "%20%20%20", "%09", "Order-1%20", "%20Order-1", "Order-1%0A"],
    ids=["space", "spaces", "tab", "trailing", "leading", "newline"],
)
def test_a_blank_or_whitespace_padded_stream_id_is_refused_and_nothing_is_appended(
    client: TestClient, app_settings: Settings, stream: str
) -> None:
    response = client.post(f"/streams/{stream}", json={"events": [event()]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    message = response.json()["message"]
    assert any(word in message for word in ("whitespace", "blank", "control characters"))
    from urllib.parse import unquote

    assert not stored(app_settings, unquote(stream))


def test_an_atomic_append_naming_a_padded_stream_id_is_refused_whole(
    client: TestClient, app_settings: Settings
) -> None:
    good = unique("Good")
    response = client.post(
        "/append",
        json={
            "appends": [
                {"stream_id": good, "events": [event()]},
                {"stream_id": " x", "events": [event()]},
            ]
        },
    )
    assert response.status_code == 400
    assert response.json()["details"] == ["appends[1].stream_id"]
    assert not stored(app_settings, good)


def test_the_category_of_a_stream_id_with_a_slash_can_be_read(client: TestClient) -> None:
    category = f"{unique('tenant').replace('-', '')}/Order"
    stream = f"{category}-1"
    appended = client.post(f"/streams/{stream}", json={"events": [event(), event()]})
    assert appended.status_code == 201
    wait_indexed(client, stream, 2)
    quoted = category.replace("/", "%2F")
    for path in (f"/categories/{quoted}", f"/categories/{category}"):
        page = client.get(path)
        assert page.status_code == 200, page.text
        assert [(e["stream_id"], e["version"]) for e in page.json()["events"]] == [
            (stream, 1),
            (stream, 2),
        ]


# -- filtered position reads ---------------------------------------------------------------


def test_a_filtered_read_whose_window_has_no_match_moves_past_what_it_scanned(
    client: TestClient,
) -> None:
    stream = unique("Filler")
    appended = client.post(f"/streams/{stream}", json={"events": [event(), event(), event()]})
    assert appended.status_code == 201
    wait_indexed(client, stream, 3)
    everything = client.get("/all", params={"from_position": 1, "limit": 10000}).json()
    head = max(e["global_position"] for e in everything["events"])
    start = head - 2  # the three events just appended, none of the wanted type
    nothing = client.get("/all", params={"from_position": start, "type": unique("Rare")})
    assert nothing.status_code == 200
    assert nothing.json()["events"] == []
    assert nothing.json()["next_position"] >= head + 1
    category = client.get(
        f"/categories/{stream.partition('-')[0]}", params={"from_position": start, "type": "Nope"}
    )
    assert category.json() == {"events": [], "next_position": category.json()["next_position"]}
    assert category.json()["next_position"] >= head + 1


def test_a_filtered_tail_sees_the_next_matching_event_after_skipping_the_others(
    client: TestClient,
) -> None:
    wanted = unique("Wanted")
    stream = unique("Tail")
    client.post(f"/streams/{stream}", json={"events": [event(), event()]})
    wait_indexed(client, stream, 2)
    first = client.get("/all", params={"from_position": 1, "limit": 10000, "type": wanted}).json()
    assert first["events"] == []
    client.post(f"/streams/{stream}", json={"events": [event(type=wanted)]})
    wait_indexed(client, stream, 3)
    second = client.get("/all", params={"from_position": first["next_position"], "type": wanted})
    assert [(e["stream_id"], e["version"]) for e in second.json()["events"]] == [(stream, 3)]


def test_a_full_page_continues_right_after_its_last_event(client: TestClient) -> None:
    stream = unique("Full")
    kind = unique("Kind")
    client.post(f"/streams/{stream}", json={"events": [event(type=kind)] * 3})
    wait_indexed(client, stream, 3)
    page = client.get("/all", params={"type": kind, "limit": 2}).json()
    assert page["next_position"] == page["events"][-1]["global_position"] + 1
    rest = client.get("/all", params={"type": kind, "from_position": page["next_position"]}).json()
    assert [e["version"] for e in rest["events"]] == [3]


# -- query parameters and content types ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/all", {"limt": "5"}),
        ("GET", "/categories/Order", {"from": "1"}),
        ("GET", "/streams/Order-1", {"fromVersion": "1"}),
        ("GET", "/streams/Order-1/state", {"verbose": "1"}),
        ("POST", "/streams/Order-1", {"expected_version": "any"}),
        ("POST", "/append", {"dry_run": "1"}),
        ("GET", "/healthz", {"x": "1"}),
    ],
)
def test_an_unknown_query_parameter_is_refused_like_an_unknown_body_field(
    client: TestClient, method: str, path: str, params: dict[str, str]
) -> None:
    body = {"appends": [{"stream_id": unique("Q"), "events": [event()]}]}
    response = client.request(
        method, path, params=params, json=body if path == "/append" else {"events": [event()]}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["details"] == sorted(params)


def test_declared_query_parameters_still_work(client: TestClient) -> None:
    response = client.get("/all", params={"from_position": 1, "limit": 1, "type": "A"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_an_append_declared_as_something_other_than_json_is_415_and_appends_nothing(
    client: TestClient, app_settings: Settings, content_type: str
) -> None:
    stream = unique("Typed")
    response = client.post(
        f"/streams/{stream}",
        content=b'{"events": [{"type": "A", "data": {}}]}',
        headers={"content-type": content_type},
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert content_type in response.json()["message"]
    assert not stored(app_settings, stream)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/cloudevents+json"],
)
def test_json_content_types_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post(
        f"/streams/{unique('Typed')}",
        content=b'{"events": [{"type": "A", "data": {}}]}',
        headers={"content-type": content_type},
    )
    assert response.status_code == 201


# -- reused event ids ----------------------------------------------------------------------


def test_the_same_id_twice_in_one_request_says_so(client: TestClient) -> None:
    same = str(uuid.uuid4())
    response = client.post(
        f"/streams/{unique('Twice')}", json={"events": [event(id=same), event(id=same)]}
    )
    assert response.status_code == 409
    body = response.json()
    assert (body["error"], body["event_ids"], body["reason"]) == (
        "duplicate_event_id",
        [same],
        "repeated_in_request",
    )
    assert "repeated within this request" in body["message"]
    assert "already in the store" not in body["message"]


def test_a_committed_id_resent_with_another_payload_is_409_saying_the_payload_differs(
    client: TestClient,
) -> None:
    stream = unique("Retry")
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    original = {"events": [event(id=ids[0]), event(id=ids[1], metadata={"k": "v"})]}
    assert client.post(f"/streams/{stream}", json=original).status_code == 201
    assert client.post(f"/streams/{stream}", json=original).status_code == 200
    for changed in (
        [event(id=ids[0]), event(id=ids[1], metadata={"k": "other"})],
        [event(id=ids[0], data={"n": 2}), event(id=ids[1], metadata={"k": "v"})],
        [event(id=ids[0], type="Other"), event(id=ids[1], metadata={"k": "v"})],
    ):
        response = client.post(f"/streams/{stream}", json={"events": changed})
        assert response.status_code == 409, response.text
        body = response.json()
        assert (body["error"], body["reason"]) == ("duplicate_event_id", "payload_differs")
        assert "different payload" in body["message"]
        assert len(body["event_ids"]) == 1 and body["event_ids"][0] in ids
    state = client.get(f"/streams/{stream}/state").json()
    assert state["version"] == 2
