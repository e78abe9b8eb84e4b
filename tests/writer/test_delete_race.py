"""Appends racing deletes of one stream (threads and two processes): both go through the head
row lock, so no acknowledged append is lost or resurrected against the rules of docs/http.md, and
versions stay contiguous in Kafka order."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from indexer.reads import Reads
from kafkastore import pg
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import StreamDeleted
from kafkastore.records import NewEvent
from kafkastore.verdict import Verdict, VerdictResolver
from tests.indexer.helpers import running_indexer
from tests.support import settings_environment, unique
from tests.writer.delete_racer import hammer
from tests.writer.topic_reader import read_topic

pytestmark = pytest.mark.slow

SECONDS = 4.0


def race(settings: Settings, stream: str, delete: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Run 4 appending threads here and 2 processes of 2 threads for SECONDS while ``delete``
    (called with the store) deletes; every append outcome, and what ``delete`` returned."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.writer.delete_racer", "2", str(SECONDS), stream],
            env={**os.environ, **settings_environment(settings)},
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()
    with EventStore(settings) as store:

        def run() -> None:
            mine = hammer(store, stream, SECONDS)
            with lock:
                outcomes.extend(mine)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        deleted = delete(store)
        for t in threads:
            t.join()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        outcomes.extend(orjson.loads(line) for line in out.splitlines())
    return outcomes, deleted


def real_versions_in_kafka_order(settings: Settings, stream: str) -> list[tuple[int, str]]:
    messages = [m for m in read_topic(settings) if m.stream_id == stream]
    with pg.connect(settings.database_url, autocommit=True) as conn:
        resolver = VerdictResolver(pg.system_identifier(conn))
        judged = resolver.judge_until_settled(conn, messages, timeout=30)
    return [
        (m.version, str(m.event_id))
        for m, j in zip(messages, judged, strict=True)
        if j.verdict is Verdict.REAL
    ]


def acked(outcomes: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return sorted(
        (int(o["from"]) + k, i) for o in outcomes if o["ok"] for k, i in enumerate(o["ids"])
    )


def test_soft_deletes_racing_appends_hide_exactly_what_was_acknowledged_before_them(
    settings: Settings,
) -> None:
    stream = unique("RaceSoft")

    def soft_deletes(store: EventStore) -> list[int]:
        heads = []
        for _ in range(3):
            time.sleep(SECONDS / 4)
            store.delete_stream(stream)
            heads.append(store.get_metadata(stream).truncate_before - 1)  # type: ignore[operator]
        return heads

    outcomes, heads = race(settings, stream, soft_deletes)

    assert all(o["ok"] for o in outcomes), [o for o in outcomes if not o["ok"]][:3]
    versions = acked(outcomes)
    # Numbering continues through every soft delete: versions 1..N, once each, in Kafka order.
    assert [v for v, _ in versions] == list(range(1, len(versions) + 1))
    assert real_versions_in_kafka_order(settings, stream) == versions
    assert heads == sorted(heads) and heads[0] > 0
    # What reads show: exactly the appends acknowledged after the last delete.
    with running_indexer(settings), Reads.open(settings) as reads:
        last = versions[-1][0]
        if last > heads[-1]:
            page = reads.read_stream(stream, min_version=last, timeout=60, limit=1000)
            readable = [(e.version, str(e.id)) for e in page.events]
            while page.next_version is not None:
                page = reads.read_stream(stream, from_version=page.next_version, limit=1000)
                readable += [(e.version, str(e.id)) for e in page.events]
            assert readable == versions[heads[-1] :]
        assert reads.stream_state(stream).readable_from == (
            heads[-1] + 1 if last > heads[-1] else None
        )


def test_a_hard_delete_racing_appends_refuses_every_append_after_it(settings: Settings) -> None:
    stream = unique("RaceHard")

    def hard_delete(store: EventStore) -> int:
        time.sleep(SECONDS / 2)
        head = store.stream_state(stream).version
        store.delete_stream(stream, hard=True)
        return head

    outcomes, head_before = race(settings, stream, hard_delete)

    refused = [o for o in outcomes if not o["ok"]]
    assert refused and {o["error"] for o in refused} == {"stream_deleted"}
    versions = acked(outcomes)
    assert [v for v, _ in versions] == list(range(1, len(versions) + 1))
    assert versions[-1][0] >= head_before
    assert real_versions_in_kafka_order(settings, stream) == versions
    with Reads.open(settings) as reads, pytest.raises(StreamDeleted):
        reads.read_stream(stream)
    with EventStore(settings) as store, pytest.raises(StreamDeleted):
        store.append(stream, [NewEvent(type="Late")], "no_stream")
