"""Racing writers: threads and processes appending with exact expected versions."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from kafkastore import pg
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.verdict import Verdict, VerdictResolver
from tests.support import settings_environment, unique
from tests.writer.racer import race
from tests.writer.topic_reader import read_topic

pytestmark = pytest.mark.slow


def test_racing_threads_and_processes_get_exactly_one_success_per_version(
    settings: Settings,
) -> None:
    streams = [unique("Race") for _ in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.writer.racer", "4", "15", *streams],
            env={**os.environ, **settings_environment(settings)},
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    acknowledged: list[dict[str, object]] = []
    lock = threading.Lock()
    with EventStore(settings) as store:

        def run(worker: int) -> None:
            for r in race(store, streams, 15, worker):
                with lock:
                    acknowledged.append(
                        {
                            "stream": r.stream_id,
                            "from": r.from_version,
                            "to": r.to_version,
                            "ids": [str(e.id) for e in r.events],
                            "partition": r.events[0].partition,
                        }
                    )

        threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        acknowledged.extend(orjson.loads(line) for line in out.splitlines())

    assert len(acknowledged) == (8 + 2 * 4) * 15
    # Exactly one success per version, versions contiguous from 1.
    by_stream: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for a in acknowledged:
        by_stream[str(a["stream"])].append((int(a["from"]), int(a["to"])))  # type: ignore[call-overload]
    for stream, ranges in by_stream.items():
        ranges.sort()
        expected_from = 1
        for lo, hi in ranges:
            assert lo == expected_from, f"{stream}: gap or overlap at {lo}"
            expected_from = hi + 1
    # Every acknowledged event is in Kafka, real (committed marker), in version order within
    # its partition.
    messages = read_topic(settings)
    with pg.connect(settings.database_url, autocommit=True) as conn:
        resolver = VerdictResolver(pg.system_identifier(conn))
        judged = resolver.judge_until_settled(conn, messages, timeout=30)
    real = {
        str(m.event_id): m
        for m, j in zip(messages, judged, strict=True)
        if j.verdict is Verdict.REAL
    }
    acked_ids = {i for a in acknowledged for i in a["ids"]}  # type: ignore[attr-defined]
    assert acked_ids <= set(real)
    assert len(real) == len(acked_ids)
    last_version: dict[str, int] = {}
    for m in messages:
        if str(m.event_id) not in real:
            continue
        assert m.version == last_version.get(m.stream_id, 0) + 1, "Kafka order != version order"
        last_version[m.stream_id] = m.version
