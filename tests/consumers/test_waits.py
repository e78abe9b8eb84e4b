"""Retry waits of subscriptions and the signal-safe stop flag, without services."""

from __future__ import annotations

import itertools
import threading
import time

from consumers import RetryPolicy
from consumers.stopflag import StopFlag


def test_retry_delays_double_from_the_backoff_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff=0.1, backoff_max=0.5)

    delays = list(itertools.islice(policy.delays(), 5))

    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert [policy.delay(n) for n in range(1, 6)] == delays


def test_a_wait_on_a_stop_flag_nobody_sets_lasts_its_timeout() -> None:
    flag = StopFlag()
    started = time.monotonic()

    assert flag.wait(0.2) is False
    assert time.monotonic() - started >= 0.2


def test_setting_the_stop_flag_from_another_thread_ends_a_wait_early() -> None:
    flag = StopFlag()
    threading.Timer(0.1, flag.set).start()
    started = time.monotonic()

    assert flag.wait(30.0) is True
    assert time.monotonic() - started < 5.0
    assert flag.is_set()
