"""The console's JSON routes and ``kafkastore dlq`` over real Kafka and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from consumers.subscription import RetryPolicy, Subscription
from kafkastore.cli import main
from kafkastore.config import Settings
from kafkastore.http import create_app
from kafkastore.records import RecordedEvent
from tests.console.handlers import marker
from tests.indexer.helpers import running_indexer
from tests.support import unique


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with running_indexer(settings), TestClient(create_app(settings)) as client:
        yield client


def append(client: TestClient, stream: str, *types: str) -> dict[str, Any]:
    response = client.post(
        f"/streams/{stream}", json={"events": [{"type": t, "data": {}} for t in types]}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_streams_are_listed_by_prefix_a_page_at_a_time_both_ways(client: TestClient) -> None:
    prefix = unique("Shelf")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        append(client, name, "Stocked")
    first = client.get("/console/api/streams", params={"prefix": prefix, "limit": 2}).json()
    assert [s["stream_id"] for s in first["streams"]] == names[:2]
    assert first["previous"] is None
    second = client.get(
        "/console/api/streams", params={"prefix": prefix, "limit": 2, "after": first["next"]}
    ).json()
    assert [s["stream_id"] for s in second["streams"]] == names[2:4]
    back = client.get(
        "/console/api/streams", params={"prefix": prefix, "limit": 2, "before": second["previous"]}
    ).json()
    assert [s["stream_id"] for s in back["streams"]] == names[:2]


def test_an_event_is_found_by_its_id_and_an_unknown_id_answers_404(client: TestClient) -> None:
    stream = unique("Order")
    result = append(client, stream, "Placed", "Paid")
    client.get(f"/streams/{stream}", params={"min_version": 2})
    found = client.get(f"/console/api/events/{result['events'][1]['id']}")
    assert found.status_code == 200
    assert (found.json()["stream_id"], found.json()["version"]) == (stream, 2)
    missing = client.get("/console/api/events/01a23123-0000-7000-8000-000000000000")
    assert missing.status_code == 404
    assert client.get("/console/api/events/not-a-uuid").status_code == 400


def test_an_event_of_a_hard_deleted_stream_answers_the_documented_410(client: TestClient) -> None:
    stream = unique("Gone")
    result = append(client, stream, "Placed")
    client.get(f"/streams/{stream}", params={"min_version": 1})
    assert client.delete(f"/streams/{stream}", params={"hard": "true"}).status_code == 204

    gone = client.get(f"/console/api/events/{result['events'][0]['id']}")

    assert (gone.status_code, gone.json()["error"]) == (410, "stream_deleted")
    documented = client.get("/openapi.json").json()["paths"]["/console/api/events/{event_id}"]
    assert "410" in documented["get"]["responses"]


def test_the_overview_counts_events_and_reports_index_lag_per_partition(
    client: TestClient, settings: Settings
) -> None:
    stream = unique("Order")
    append(client, stream, "Placed")
    client.get(f"/streams/{stream}", params={"min_version": 1})
    body = client.get("/console/api/overview").json()
    assert body["indexed_events"] >= 1 and body["streams"] >= 1
    assert [lag["partition"] for lag in body["index_lag"]] == list(range(settings.partitions))
    assert all(lag["offsets"] >= 0 and lag["seconds"] >= 0 for lag in body["index_lag"])


def test_the_console_page_and_its_assets_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/console")
    assert page.status_code == 200 and "/console/assets/console.js" in page.text
    assert (
        client.get("/console/assets/console.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert client.get("/console/assets/nope.js").status_code == 404
    spec = client.get("/openapi.json").json()
    assert "/console/api/groups/{group}/dead-letters/replay" in spec["paths"]


def test_dlq_list_and_replay_on_the_command_line(
    client: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    stream, group = unique("Invoice"), unique("billing")
    result = append(client, stream, "Issued", "Poison")
    poisoned = result["events"][1]["id"]
    handled: list[str] = []

    def handler(event: RecordedEvent) -> None:
        if event.type == "Poison":
            raise ValueError("cannot digest this invoice")
        handled.append(event.type)

    with Subscription(
        group,
        handler,
        categories=[stream.split("-")[0]],
        settings=settings,
        retry=RetryPolicy(attempts=2, backoff=0.01),
        install_signal_handlers=False,
    ).start() as sub:
        deadline = time.monotonic() + 60
        while sub.stats()["dead_letters"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    for name, value in {
        "KAFKASTORE_KAFKA": settings.kafka,
        "KAFKASTORE_DATABASE_URL": settings.database_url,
        "KAFKASTORE_TOPIC": settings.topic,
        "KAFKASTORE_INDEXER_GROUP": settings.indexer_group,
    }.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["dlq", "list", group]) == 0
    (letter,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (letter["event_id"], letter["stream_id"]) == (poisoned, stream)
    assert letter["error"] == "ValueError: cannot digest this invoice"
    handler_name = "tests.console.handlers:remember"
    assert main(["dlq", "replay", group, "--handler", handler_name]) == 0
    (replayed,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert replayed["outcome"] == "handled"
    assert marker(poisoned).read_text().split() == [stream, "v2", "Poison"]
    assert main(["dlq", "replay", group, "--handler", handler_name]) == 0
    (again,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert again["outcome"] == "already-replayed"
