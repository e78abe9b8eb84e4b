"""Subprocess for the racing test: append with exact expected versions until N successes.

Usage: python -m tests.writer.racer THREADS SUCCESSES STREAM... (settings from env).
Prints one JSON line per acknowledged append: {"stream", "from", "to", "ids", "partition"}.
"""

from __future__ import annotations

import sys
import threading

import orjson

from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import WrongExpectedVersion
from kafkastore.records import AppendResult, NewEvent


def race(store: EventStore, streams: list[str], successes: int, worker: int) -> list[AppendResult]:
    known = dict.fromkeys(streams, 0)
    done: list[AppendResult] = []
    i = 0
    while len(done) < successes:
        stream = streams[(worker + i) % len(streams)]
        i += 1
        expected = known[stream]
        try:
            result = store.append(
                stream,
                [NewEvent(type="Raced", data={"w": worker, "i": i}) for _ in range(1 + i % 3)],
                expected_version=expected if expected else "no_stream",
            )
        except WrongExpectedVersion as exc:
            known[stream] = exc.current
            continue
        known[stream] = result.to_version
        done.append(result)
    return done


def main() -> None:
    threads, successes, *streams = sys.argv[1:]
    results: list[AppendResult] = []
    lock = threading.Lock()
    with EventStore(Settings.from_env()) as store:

        def run(worker: int) -> None:
            out = race(store, streams, int(successes), worker)
            with lock:
                results.extend(out)

        pool = [threading.Thread(target=run, args=(w,)) for w in range(int(threads))]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    for r in results:
        line = {
            "stream": r.stream_id,
            "from": r.from_version,
            "to": r.to_version,
            "ids": [str(e.id) for e in r.events],
            "partition": r.events[0].partition,
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")


if __name__ == "__main__":
    main()
