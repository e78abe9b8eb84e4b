"""The reads without I/O: a read is a generator of steps, driven here by hand."""

from __future__ import annotations

from typing import Any

import pytest

from indexer.read_steps import LISTEN, STREAM_FORWARD, STREAM_HEAD, Fetch, ReadSteps, Steps, Wait
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, StreamNotFound


def head(indexed: int | None, version: int | None) -> list[tuple[Any, ...]]:
    """The one row of STREAM_HEAD for a stream indexed up to ``indexed``, at ``version``."""
    return [(indexed, version, None, False, "Order", None, None, False, 1 if indexed else None)]


def finish(steps: Steps[Any], value: Any) -> Any:
    with pytest.raises(StopIteration) as done:
        steps.send(value)
    return done.value.value


def test_a_min_version_read_listens_then_checks_the_index_again_after_each_wake_up() -> None:
    steps = ReadSteps(Settings.from_env({})).read_stream("Order-1", min_version=2, timeout=30)

    assert next(steps) == LISTEN
    assert steps.send(7) == Fetch(STREAM_HEAD, {"s": "Order-1"})
    wait = steps.send(head(1, 2))
    assert isinstance(wait, Wait)
    assert wait.generation == 7 and 0 < wait.timeout <= 30
    assert steps.send(8) == Fetch(STREAM_HEAD, {"s": "Order-1"})
    assert steps.send(head(2, 2)) == Fetch(STREAM_FORWARD, ("Order-1", 1, 101))
    page = finish(steps, [])
    assert (page.version, page.events, page.next_version, page.index_behind) == (2, (), None, False)


def test_a_min_version_read_that_times_out_answers_what_is_indexed_and_says_so() -> None:
    steps = ReadSteps(Settings.from_env({})).read_stream("Order-1", min_version=5, timeout=0)

    assert next(steps) == LISTEN
    assert steps.send(1) == Fetch(STREAM_HEAD, {"s": "Order-1"})
    assert steps.send(head(3, 5)) == Fetch(STREAM_FORWARD, ("Order-1", 1, 101))
    page = finish(steps, [])
    assert (page.version, page.index_behind) == (3, True)


def test_arguments_are_checked_before_any_io_and_a_missing_stream_is_not_found() -> None:
    reads = ReadSteps(Settings.from_env({}))

    with pytest.raises(InvalidRequest):
        next(reads.read_stream("Order-1", limit=0))
    with pytest.raises(InvalidRequest):
        next(reads.read_all(from_position=0))
    missing = reads.stream_state("Order-1")
    assert next(missing) == Fetch(STREAM_HEAD, {"s": "Order-1"})
    with pytest.raises(StreamNotFound):
        missing.send(head(None, None))
