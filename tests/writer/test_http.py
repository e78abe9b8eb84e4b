"""The append routes of the HTTP API: every status and error body of docs/http.md."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from kafkastore import pg
from kafkastore.config import Settings
from kafkastore.http import create_app
from tests.support import unique
from tests.writer.topic_reader import read_topic

LIMITS = {"max_event_bytes": 1000, "max_request_bytes": 4000, "max_events_per_append": 5}


@pytest.fixture
def http_settings(make_settings: Any) -> Settings:
    return make_settings(**LIMITS)  # type: ignore[no-any-return]


@pytest.fixture
def client(http_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(http_settings)) as client:
        yield client


def event(**overrides: Any) -> dict[str, Any]:
    return {"type": "OrderPlaced", "data": {"total": 12}, **overrides}


def test_an_append_answers_201_with_versions_partitions_and_offsets(client: TestClient) -> None:
    stream = unique("Order")
    response = client.post(
        f"/streams/{stream}", json={"expected_version": "no_stream", "events": [event(), event()]}
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["stream_id"], body["from_version"], body["to_version"]) == (stream, 1, 2)
    assert [e["version"] for e in body["events"]] == [1, 2]
    assert all(e["partition"] >= 0 and e["offset"] >= 0 for e in body["events"])


def test_an_idempotent_repeat_answers_200_with_the_same_body(client: TestClient) -> None:
    stream = unique("Order")
    request = {"events": [event(id=str(uuid.uuid4()))]}
    first = client.post(f"/streams/{stream}", json=request)
    again = client.post(f"/streams/{stream}", json=request)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()


def test_a_failed_precondition_answers_409_with_current_version(client: TestClient) -> None:
    stream = unique("Order")
    client.post(f"/streams/{stream}", json={"events": [event()]})
    response = client.post(f"/streams/{stream}", json={"expected_version": 5, "events": [event()]})
    assert response.status_code == 409
    assert response.json() == {
        "error": "wrong_expected_version",
        "message": f"Wrong expected version: 5 (Stream: {stream}, Stream Version: 1)",
        "stream_id": stream,
        "expected_version": 5,
        "current_version": 1,
    }


def test_duplicate_event_ids_answer_409_listing_them(client: TestClient) -> None:
    stored = str(uuid.uuid4())
    client.post(f"/streams/{unique('Order')}", json={"events": [event(id=stored)]})
    response = client.post(f"/streams/{unique('Order')}", json={"events": [event(id=stored)]})
    assert response.status_code == 409
    assert response.json()["error"] == "duplicate_event_id"
    assert response.json()["event_ids"] == [stored]


def test_an_atomic_append_answers_201_or_409_listing_every_conflict(client: TestClient) -> None:
    a, b, c = unique("Order"), unique("Order"), unique("Order")
    client.post(f"/streams/{b}", json={"events": [event()]})
    client.post(f"/streams/{c}", json={"events": [event()]})
    conflict = client.post(
        "/append",
        json={
            "appends": [
                {"stream_id": a, "expected_version": "no_stream", "events": [event()]},
                {"stream_id": b, "expected_version": "no_stream", "events": [event()]},
                {"stream_id": c, "expected_version": 3, "events": [event()]},
            ]
        },
    )
    assert conflict.status_code == 409
    assert [x["stream_id"] for x in conflict.json()["conflicts"]] == [b, c]
    ok = client.post(
        "/append",
        json={
            "appends": [
                {"stream_id": a, "expected_version": "no_stream", "events": [event()]},
                {"stream_id": b, "expected_version": 1, "events": [event(), event()]},
            ]
        },
    )
    assert ok.status_code == 201
    assert [(r["stream_id"], r["to_version"]) for r in ok.json()["results"]] == [(a, 1), (b, 3)]


BAD_REQUESTS: list[tuple[str, Any, int, str]] = [
    ("malformed JSON", b'{"events": [', 400, "invalid_request"),
    ("not an object", [1, 2], 400, "invalid_request"),
    ("missing events", {"expected_version": "any"}, 400, "invalid_request"),
    ("empty events", {"events": []}, 400, "invalid_request"),
    ("events not a list", {"events": {"type": "A"}}, 400, "invalid_request"),
    ("event not an object", {"events": ["A"]}, 400, "invalid_request"),
    ("missing type", {"events": [{"data": {}}]}, 400, "invalid_request"),
    ("missing data", {"events": [{"type": "A"}]}, 400, "invalid_request"),
    ("type not a string", {"events": [event(type=3)]}, 400, "invalid_request"),
    ("empty type", {"events": [event(type="")]}, 400, "invalid_request"),
    ("type too long", {"events": [event(type="t" * 257)]}, 400, "invalid_request"),
    ("control character in type", {"events": [event(type="A\nB")]}, 400, "invalid_request"),
    ("bad uuid", {"events": [event(id="not-a-uuid")]}, 400, "invalid_request"),
    ("uuid not a string", {"events": [event(id=12)]}, 400, "invalid_request"),
    ("metadata not an object", {"events": [event(metadata=[1])]}, 400, "invalid_request"),
    (
        "negative expected version",
        {"expected_version": -1, "events": [event()]},
        400,
        "invalid_request",
    ),
    (
        "unknown expected word",
        {"expected_version": "latest", "events": [event()]},
        400,
        "invalid_request",
    ),
    (
        "float expected version",
        {"expected_version": 1.5, "events": [event()]},
        400,
        "invalid_request",
    ),
    (
        "boolean expected version",
        {"expected_version": True, "events": [event()]},
        400,
        "invalid_request",
    ),
    ("unknown field", {"events": [event()], "expected": 1}, 400, "invalid_request"),
    ("bad base64", {"events": [{"type": "A", "data_base64": "%%%"}]}, 400, "invalid_request"),
    ("oversize event", {"events": [event(data="x" * 1200)]}, 413, "payload_too_large"),
    (
        "oversize request",
        {"events": [event(data="x" * 900) for _ in range(5)]},
        413,
        "payload_too_large",
    ),
    ("too many events", {"events": [event() for _ in range(6)]}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_a_bad_append_is_refused_with_the_api_error_and_appends_nothing(
    client: TestClient, http_settings: Settings, case: str, body: Any, status: int, code: str
) -> None:
    stream = unique("Bad")
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post(f"/streams/{stream}", content=content)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == code
    assert payload["message"]
    if status == 413:
        assert payload["limit"] in LIMITS
    with pg.connect(http_settings.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM streams WHERE stream_id = %s", (stream,)).fetchone()
    assert row is None


@pytest.mark.parametrize(
    ("stream", "reason"),
    [("$all", "reserved"), ("%24system", "reserved"), ("a%01b", "control"), ("s" * 257, "long")],
)
def test_a_bad_stream_id_is_refused(client: TestClient, stream: str, reason: str) -> None:
    response = client.post(f"/streams/{stream}", json={"events": [event()]})
    assert response.status_code == 400, reason
    assert response.json()["error"] == "invalid_request"


def test_an_atomic_append_with_a_bad_entry_appends_nothing(
    client: TestClient, http_settings: Settings
) -> None:
    good = unique("Good")
    response = client.post(
        "/append",
        json={
            "appends": [
                {"stream_id": good, "events": [event()]},
                {"stream_id": "", "events": [event()]},
            ]
        },
    )
    assert response.status_code == 400
    assert response.json()["details"] == ["appends[1].stream_id"]
    assert read_topic(http_settings) == []


def test_binary_payloads_round_trip_exactly(client: TestClient, http_settings: Settings) -> None:
    raw = bytes(range(256))
    import base64

    stream = unique("Blob")
    response = client.post(
        f"/streams/{stream}",
        json={
            "events": [
                {
                    "type": "Blob",
                    "data_base64": base64.b64encode(raw).decode(),
                    "content_type": "application/x-thing",
                }
            ]
        },
    )
    assert response.status_code == 201
    (message,) = read_topic(http_settings)
    assert message.value == raw and message.content_type == "application/x-thing"


def test_health_readiness_and_openapi_are_served(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/streams/{stream_id}", "/append", "/healthz", "/readyz"} <= set(paths)


def test_a_stream_id_with_a_slash_can_be_appended_to_and_read(client: TestClient) -> None:
    stream = f"{unique('Tenant')}/Order-1"
    appended = client.post(f"/streams/{stream}", json={"events": [event()]})
    assert appended.status_code == 201
    assert appended.json()["stream_id"] == stream
    state = client.get(f"/streams/{stream}/state")
    assert state.status_code == 200 and state.json()["version"] == 1
    read = client.get(f"/streams/{stream}", params={"min_version": 1, "timeout_ms": 0})
    assert read.status_code == 200 and read.json()["stream_id"] == stream
