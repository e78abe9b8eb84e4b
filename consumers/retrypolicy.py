"""How often a subscription tries a failing event before it is dead-lettered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kafkastore.retry import Backoff

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often a failing event is tried before it is dead-lettered."""

    attempts: int = 5
    """Total attempts (the first one included)."""
    backoff: float = 0.1
    """Wait after the first failure (seconds); doubles after each one."""
    backoff_max: float = 5.0
    """Longest wait between two attempts."""

    def delays(self) -> Iterator[float]:
        """The waits after the first, second, ... failure of one event."""
        return Backoff(
            initial=min(self.backoff, self.backoff_max), maximum=self.backoff_max
        ).delays()

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failure of one event (1 for the first)."""
        delays = self.delays()
        for _ in range(failures - 1):
            next(delays)
        return next(delays)
