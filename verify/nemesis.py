"""The interface every fault plugs into, and the context a fault acts on.

A :class:`Nemesis` is one kind of fault: :meth:`~Nemesis.inject` breaks something (kill a
broker, pause a process, cut a link), :meth:`~Nemesis.heal` repairs it (restart, resume,
reconnect). :class:`verify.schedule.Schedule` calls them under load at randomised moments::

    class PauseBroker:
        name = "broker-pause"
        hold = (12.0, 15.0)        # seconds between inject and heal, drawn at random
        loses_acknowledged = False  # True only where a setting allows acknowledged loss

        def inject(self, ctx: FaultContext) -> None: ...
        def heal(self, ctx: FaultContext) -> None: ...

``heal`` must be safe to call when ``inject`` failed halfway (the schedule always heals), and
may block until the broken part is back (a restarted process answering). What a fault needs
beyond :class:`FaultContext` (a cluster, a proxy, a service handle) it takes in its constructor.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kafkastore.config import Settings
from verify.history import Recorder

logger = logging.getLogger("kafkastore.verify")


@runtime_checkable
class Nemesis(Protocol):
    """One kind of fault (see the module docstring)."""

    name: str
    """Unique in a schedule; the fault's row in the report."""
    hold: tuple[float, float]
    """Seconds between :meth:`inject` and :meth:`heal`, drawn uniformly from this range."""
    loses_acknowledged: bool
    """True for a fault whose *configuration* allows acknowledged loss (a PostgreSQL crash with
    ``synchronous_commit=off``): its lost events are reported apart, not as violations."""

    def inject(self, ctx: FaultContext) -> None:
        """Break something; return once it is broken."""

    def heal(self, ctx: FaultContext) -> None:
        """Repair it; safe after a failed or partial :meth:`inject`."""


@dataclass(slots=True)
class FaultContext:
    """What a fault may use: the run's settings, its randomness, its history, and the streams
    the workload writes (to aim at the partition of a hot stream)."""

    settings: Settings
    recorder: Recorder
    rng: random.Random
    hot_streams: list[str] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)
    """Free-form facts a fault reports (``victim``, ``partition``, measured times); copied into
    the fault's report."""
    on_note: Callable[[str, object], None] | None = None

    def note(self, key: str, value: object) -> None:
        """Record a fact of the current fault (in the history and the report)."""
        self.notes[key] = value
        logger.info("nemesis note %s=%r", key, value)
        if self.on_note is not None:
            self.on_note(key, value)


class NoFault:
    """The control phase: load without a fault (what the figures of the others compare to)."""

    name = "none"
    hold: tuple[float, float] = (2.0, 4.0)
    loses_acknowledged = False

    def inject(self, ctx: FaultContext) -> None:
        del ctx

    def heal(self, ctx: FaultContext) -> None:
        del ctx
