"""A deliberately broken writer for the negative control (tests only; no user can set it).

:func:`commit_before_acks` makes step 4 of the append protocol (``writer.produce``'s
``produce_and_await``) hand every message to the producer and return at once, without waiting
for a single delivery report: the writer then COMMITs heads and marker before Kafka acknowledged
anything - the bug docs/design.md section 2 forbids. A schedule that pauses a partition leader
past the delivery timeout makes those messages fail after the commit, so acknowledged events
never reach Kafka: the checker must report them lost.
"""

from __future__ import annotations

import pytest

from writer import produce


class _NoWait(produce.DeliveryTracker):
    """A tracker that waits for nothing (partitions and offsets unknown: 0 and -1)."""

    def wait(self, timeout: float) -> None:
        del timeout  # the bug: no delivery report is awaited before COMMIT

    def resolve(self, produced: list[tuple[bytes, int]]) -> None:
        count = sum(n for _key, n in produced)
        self.partitions[:] = [0] * count
        self.offsets[:] = [-1] * count


def commit_before_acks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the broken step 4 in this process until the test ends."""
    monkeypatch.setattr(produce, "DeliveryTracker", _NoWait)
