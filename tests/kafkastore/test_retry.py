"""The one retry helper: delays, deadlines and stops, without services."""

from __future__ import annotations

import asyncio
import threading
import time

from kafkastore.retry import Backoff


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    delays = Backoff(initial=0.1, maximum=0.5, factor=2.0).delays()

    assert [next(delays) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_attempts_stop_at_the_deadline_with_a_last_try_at_it() -> None:
    started = time.monotonic()
    tried = list(Backoff(initial=0.02, maximum=0.05).attempts(timeout=0.2))
    elapsed = time.monotonic() - started

    assert tried[0] == 1
    assert tried == list(range(1, len(tried) + 1))
    assert 3 <= len(tried) <= 10
    assert 0.19 <= elapsed < 1.0


def test_the_first_attempt_does_not_sleep() -> None:
    started = time.monotonic()
    for _ in Backoff(initial=5.0).attempts(timeout=10.0):
        break
    assert time.monotonic() - started < 0.5


def test_a_set_stop_event_ends_the_attempts_without_waiting_out_the_delay() -> None:
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()

    tried = list(Backoff(initial=10.0).attempts(stop=stop))

    assert tried == [1]
    assert time.monotonic() - started < 2.0


def test_async_attempts_end_at_the_deadline_or_the_stop() -> None:
    async def run() -> tuple[list[int], list[int]]:
        timed = [a async for a in Backoff(initial=0.02, maximum=0.02).attempts_async(timeout=0.1)]
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        stopped = [a async for a in Backoff(initial=10.0).attempts_async(stop=stop)]
        return timed, stopped

    timed, stopped = asyncio.run(run())

    assert len(timed) >= 3
    assert stopped == [1]
