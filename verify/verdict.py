"""What the checker answers: the violations found, and the figures of each fault.

:class:`Verdict` is the checker's answer (:func:`verify.checker.check`); :class:`PhaseReport`
is one row of the report per fault (docs/verify.md, "The report").
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "lost",
    "phantom",
    "duplicate",
    "wrong_version",
    "partial",
    "idempotency",
    "version_gap",
    "all_gap",
    "order",
    "tail_skip",
    "tail_mismatch",
    "projection",
)
"""Every kind of violation the checker reports."""

BETWEEN = "between faults"
"""The phase of operations invoked outside every fault's window."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken guarantee."""

    kind: str
    """One of :data:`KINDS`."""
    detail: str
    event: str | None = None
    op: int | None = None


@dataclass(slots=True)
class PhaseReport:
    """The figures of one fault (or of the time between faults)."""

    name: str
    injected_at: float | None = None
    healed_at: float | None = None
    ended_at: float | None = None
    appends: int = 0
    acknowledged: int = 0
    """Acknowledged appends invoked in this phase."""
    acknowledged_events: int = 0
    failed: int = 0
    lost: int = 0
    """Acknowledged events of this phase missing from a final read (must be 0)."""
    lost_by_setting: int = 0
    """Lost, but during a fault that allows it by configuration (reported, not a violation)."""
    phantoms: int = 0
    duplicates: int = 0
    unknown: int = 0
    settled: dict[str, int] = field(default_factory=dict)
    """How the unknown outcomes settled: ``committed`` (in the store; the retry was answered
    as a repeat), ``absent`` (not in the store; the retry wrote it or failed), ``unsettled``
    (no retry answered; the final reads alone decided)."""
    writes_recovered_s: float | None = None
    """From the injection to the first acknowledgement after the last append of the phase that
    failed as unavailable or ended unknown (0 when none did)."""
    max_write_gap_s: float | None = None
    """The longest time without any acknowledgement, from the injection to the phase's end."""
    reads_recovered_s: float | None = None
    """From the injection until the tailing reader saw the last event of the phase that it saw
    :data:`STALL` or more after its acknowledgement (0 when reads never stalled)."""
    max_read_lag_s: float | None = None
    """The longest time between an acknowledgement in this phase and the tail reader's seeing
    it."""
    deliveries_recovered_s: float | None = None
    """Like :attr:`reads_recovered_s`, for the exactly-once projection's deliveries (when the
    history has their times): from the injection until the projection delivered the last event
    of the phase that it delivered :data:`STALL` or more after its acknowledgement."""
    max_delivery_lag_s: float | None = None
    """The longest time between an acknowledgement in this phase and its delivery."""
    notes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class Verdict:
    """The checker's answer: ``ok`` iff no violation."""

    violations: list[Violation]
    phases: list[PhaseReport]
    counts: dict[str, int]
    """Totals: operations, acknowledged events, events read, delivered, ..."""

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> Counter[str]:
        return Counter(v.kind for v in self.violations)

    def summary(self) -> str:
        if self.ok:
            return "ok: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.kinds().items()))
        first = "; ".join(v.detail for v in self.violations[:5])
        return f"VIOLATED: {kinds} (first: {first})"


OUTAGE_ERRORS = frozenset({"Unavailable", "unavailable", "SchemaError", "schema"})
"""The definite failures that mean "down, retry later" (Python class names and HTTP codes); the
others (a wrong expected version, a duplicate id) are answers, not outages."""

STALL = 1.0
"""Seconds between an acknowledgement and the tail's seeing it that count as stalled reads."""


@dataclass(slots=True)
class Op:
    """One append as the history tells it (invoke and completion)."""

    op: int
    process: str
    stream: str
    expected: Any
    events: list[tuple[str, int]]
    invoked: float
    retry_of: int | None
    outcome: str = "unknown"  # no completion: a crashed client, the same as unknown
    completed: float | None = None
    from_version: int | None = None
    created: bool | None = None
    error: str = ""
    phase: str = BETWEEN

    @property
    def outage(self) -> bool:
        """Not acknowledged because something was down (not a refusal the contract makes)."""
        if self.outcome == "ok":
            return False
        return self.outcome != "fail" or self.error in OUTAGE_ERRORS


@dataclass(slots=True)
class Window:
    """One fault's moments: injected, healed, ended."""

    name: str
    injected: float
    healed: float | None = None
    ended: float | None = None
    loses_acknowledged: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


def _stalls(
    acked_by: dict[str, Op], seen: dict[str, float], start: float, end: float
) -> tuple[float | None, float | None]:
    """(recovered, longest lag) of the events acknowledged in [start, end) that were ``seen``
    (by the tail, or delivered) at the times given: recovered is from ``start`` until the last
    of them seen :data:`STALL` or more after its acknowledgement (0.0 when none was); None and
    None when nothing of the phase was seen at all."""
    lags = []
    stalled = []
    for event, op in acked_by.items():
        if op.completed is None or not start <= op.completed < end:
            continue
        if event in seen:
            lag = seen[event] - op.completed
            lags.append(lag)
            if lag >= STALL:
                stalled.append(seen[event])
    if not lags:
        return None, None
    recovered = round(max(stalled) - start, 3) if stalled else 0.0
    return recovered, round(max(lags), 3)


def recovery_times(
    reports: dict[str, PhaseReport],
    phases: list[Window],
    ops: list[Op],
    tails: dict[str, list[tuple[float, list[tuple[int, str, int, str]]]]],
    acked_by: dict[str, Op],
    *,
    delivered_at: dict[str, float] | None = None,
) -> None:
    """Fill each fault's write, read and delivery recovery figures (see :class:`PhaseReport`);
    ``delivered_at``: each event's first delivery time (None: the history has no times)."""
    oks = sorted(o.completed for o in ops if o.outcome == "ok" and o.completed)
    seen: dict[str, float] = {}
    for _process, pages in tails.items():
        for t, page in pages:
            for *_x, event in page:
                seen.setdefault(event, t)
    for p in phases:
        r = reports[p.name]
        end = p.ended if p.ended is not None else (oks[-1] if oks else p.injected)
        bad = [o.completed or o.invoked for o in ops if o.outage and p.injected <= o.invoked < end]
        if bad:
            after = [t for t in oks if t > max(bad)]
            r.writes_recovered_s = round(after[0] - p.injected, 3) if after else None
        else:
            r.writes_recovered_s = 0.0
        marks = [p.injected, *(t for t in oks if p.injected < t < end), end]
        r.max_write_gap_s = round(max(b - a for a, b in itertools.pairwise(marks)), 3)
        recovered, r.max_read_lag_s = _stalls(acked_by, seen, p.injected, end)
        r.reads_recovered_s = recovered if recovered is not None else 0.0
        if delivered_at:
            r.deliveries_recovered_s, r.max_delivery_lag_s = _stalls(
                acked_by, delivered_at, p.injected, end
            )
