"""A schedule: a workload under load, a sequence of faults at random moments, then the verdict.

::

    result = Schedule(settings, workload, [KillLeader(cluster), PauseBroker(cluster)], seed=7).run()
    assert result.verdict.ok, result.verdict.summary()

For each fault, in order: ``warmup`` seconds of load (drawn at random), ``inject``, the fault's
``hold`` (drawn at random), ``heal``, then load until an append is acknowledged again (at most
``recovery`` seconds) and ``settle`` more seconds. After the last fault the workload stops
(retrying its unknown outcomes with the same ids), observes the store (stream reads, ``$all``,
deliveries, projections), and :func:`verify.checker.check` judges the history. Each fault's row
of :attr:`Result.verdict` (``phases``) says what was acknowledged, lost, seen as phantom or
duplicate, unknown and how it settled, and when writes and reads recovered.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kafkastore.config import Settings
from verify.checker import Verdict, check
from verify.history import Entry, Recorder
from verify.nemesis import FaultContext, Nemesis

logger = logging.getLogger("kafkastore.verify")


class Workload(Protocol):
    """The load under which faults run, and the final observation of what it wrote."""

    hot_streams: list[str]
    """The streams most appends go to (faults aim at their partitions)."""

    def start(self, recorder: Recorder) -> None:
        """Begin appending (and tailing, subscribing), recording every operation."""

    def acknowledged(self) -> int:
        """How many appends were acknowledged so far (the schedule watches it recover)."""

    def stop(self) -> None:
        """Stop appending; settle unknown outcomes by retrying them with the same ids."""

    def observe(self, recorder: Recorder) -> None:
        """Once the store has caught up: record the final reads and deliveries."""


@dataclass(slots=True)
class Result:
    """What :meth:`Schedule.run` found."""

    verdict: Verdict
    entries: list[Entry]
    seconds: float
    seed: int
    history_path: Path | None = None


@dataclass(slots=True)
class Schedule:
    """Runs ``workload`` and ``nemeses`` (see the module docstring)."""

    settings: Settings
    workload: Workload
    nemeses: Sequence[Nemesis]
    seed: int = 0
    warmup: tuple[float, float] = (2.0, 4.0)
    recovery: float = 90.0
    settle: float = 2.0
    history_path: Path | None = None
    progress: Callable[[str], None] = field(default=logger.info)

    def run(self) -> Result:
        names = [n.name for n in self.nemeses]
        if len(set(names)) != len(names):
            raise ValueError(f"fault names must be unique in a schedule: {names}")
        rng = random.Random(self.seed)
        recorder = Recorder(self.history_path)
        started = time.monotonic()
        try:
            self.workload.start(recorder)
            for nemesis in self.nemeses:
                self._one(nemesis, recorder, rng)
            self.progress("stopping the workload (settling unknown outcomes)")
            self.workload.stop()
            self.progress("observing the store")
            self.workload.observe(recorder)
        finally:
            recorder.close()
        verdict = check(recorder.entries())
        return Result(
            verdict,
            recorder.entries(),
            time.monotonic() - started,
            self.seed,
            self.history_path,
        )

    def _one(self, nemesis: Nemesis, recorder: Recorder, rng: random.Random) -> None:
        ctx = FaultContext(
            settings=self.settings,
            recorder=recorder,
            rng=rng,
            hot_streams=list(self.workload.hot_streams),
            on_note=lambda key, value: recorder.nemesis(nemesis.name, "note", key=key, value=value),
        )
        time.sleep(rng.uniform(*self.warmup))
        self.progress(f"{nemesis.name}: inject")
        recorder.nemesis(
            nemesis.name, "inject", loses_acknowledged=bool(nemesis.loses_acknowledged)
        )
        try:
            nemesis.inject(ctx)
            hold = rng.uniform(*nemesis.hold)
            ctx.note("hold_s", round(hold, 3))
            time.sleep(hold)
        finally:
            self.progress(f"{nemesis.name}: heal")
            try:
                nemesis.heal(ctx)
            finally:
                recorder.nemesis(nemesis.name, "heal")
        before = self.workload.acknowledged()
        deadline = time.monotonic() + self.recovery
        while self.workload.acknowledged() <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.workload.acknowledged() <= before:
            ctx.note("writes_not_recovered_within_s", self.recovery)
        time.sleep(self.settle)
        recorder.nemesis(nemesis.name, "end")
