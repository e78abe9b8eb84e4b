"""Subprocess of the append/delete race: append to one stream for SECONDS, print every outcome.

Usage: python -m tests.writer.delete_racer THREADS SECONDS STREAM (settings from env).
One JSON line per append: {"ok": true, "from", "to", "ids"} or {"ok": false, "error": code}.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import orjson

from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError
from kafkastore.records import NewEvent


def hammer(store: EventStore, stream: str, seconds: float) -> list[dict[str, Any]]:
    """Append 1-3 events at a time with ``"any"`` until ``seconds`` pass; every outcome."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        try:
            r = store.append(
                stream, [NewEvent(type="Raced", data={"i": i, "k": k}) for k in range(1 + i % 3)]
            )
        except KafkaStoreError as exc:
            out.append({"ok": False, "error": exc.code})
            continue
        out.append(
            {"ok": True, "from": r.from_version, "to": r.to_version,
             "ids": [str(e.id) for e in r.events]}
        )  # fmt: skip
    return out


def main() -> None:
    threads, seconds, stream = sys.argv[1:]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    with EventStore(Settings.from_env()) as store:

        def run() -> None:
            mine = hammer(store, stream, float(seconds))
            with lock:
                results.extend(mine)

        pool = [threading.Thread(target=run) for _ in range(int(threads))]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    for line in results:
        sys.stdout.write(orjson.dumps(line).decode() + "\n")


if __name__ == "__main__":
    main()
