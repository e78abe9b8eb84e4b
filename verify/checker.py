"""The checker: a history in, a verdict out (pure: no I/O, no clock, no randomness).

What the history must show (docs/verify.md lists the guarantees and README "How an append
works" argues them):

- every acknowledged event is read exactly once, at the stream and version it was acknowledged
  at, in its stream's final read, in the final ``$all`` read, and in the exactly-once
  projection's deliveries (``lost``, ``duplicate``, ``wrong_version``);
- nothing is ever read or delivered that no append could have written: an id no operation
  carried, or one that only failed operations carried (``phantom``);
- an unknown outcome is all-or-nothing (``partial``); its retry with the same ids is answered
  idempotently: a retry that wrote the events again shows as ``duplicate``, and one answered
  ``created`` although its ids were committed before it was sent (acknowledged, or read by the
  tail), or answered as a repeat although nothing earlier could have committed them, is
  ``idempotency``;
- a stream's versions are 1..n (``version_gap``); ``$all`` positions are 1..N (``all_gap``) and
  keep each stream in version order (``order``); a tailing ``$all`` reader never sees a jump
  (``tail_skip``) and never sees an event the final ``$all`` has at another position
  (``tail_mismatch``);
- a subscription delivers each stream in version order (``order``), and the exactly-once
  projection's state equals the model computed from the history (``projection``).

Observations (``type: observe``), by ``f``:

- ``stream``: ``stream``, ``events`` = ``[[version, id], ...]`` (the whole stream);
- ``all``: ``events`` = ``[[position, stream, version, id, partition, offset], ...]`` (the whole
  of ``$all``; the place in the log may be left out);
- ``tail``: ``process``, ``events`` (as ``all``), one page as a tailing reader got it;
- ``delivered``: ``process``, ``events`` = ``[[stream, version, id, t], ...]`` in delivery order
  (``t``, when there: the delivery's time on the history's clock);
- ``projection``: ``process``, ``state`` = ``{stream: [count, sum of n, last version]}``;
- ``reissued``: ``fault``, ``messages`` = ``[[xid, write id, id, partition, offset, when], ...]``:
  the writer's messages of every xid two transactions carried (a crash lost the first one's
  WAL), ``when`` ``before`` the crash (that transaction never committed: none of them may be
  in the final ``$all``, a ``phantom``) or ``after`` it.

The last observation of each stream / process is the final one. Events acknowledged during a
fault whose configuration allows acknowledged loss (``loses_acknowledged``) and then lost are
counted apart (``lost_by_setting``), as are the tail's mismatches after such a fault.

Why this module is longer than ~400 lines: it is one verdict. Every check reads the same
classified history - which op carried, acknowledged or may have committed each id, and which
fault windows excuse a loss - and the report's figures count the violations the checks found;
split over modules, that state would be handed around instead of read in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from verify.history import Entry
from verify.verdict import (
    BETWEEN,
    KINDS,
    Op,
    PhaseReport,
    Verdict,
    Violation,
    Window,
    recovery_times,
)

__all__ = ["BETWEEN", "KINDS", "PhaseReport", "Verdict", "Violation", "check"]


class _Check:
    def __init__(self, entries: Sequence[Entry]) -> None:
        self.violations: list[Violation] = []
        self.ops: dict[int, Op] = {}
        self.phases: list[Window] = []
        self.streams: dict[str, list[tuple[int, str]]] = {}
        self.all_read: list[tuple[int, str, int, str]] | None = None
        self.tails: dict[str, list[tuple[float, list[tuple[int, str, int, str]]]]] = {}
        self.delivered: dict[str, list[tuple[str, int, str]]] = {}
        self.projections: dict[str, dict[str, list[int]]] = {}
        self.delivered_at: dict[str, float] = {}
        """Each event's first delivery (when the ``delivered`` observations have times)."""
        self.places: dict[tuple[int, int], tuple[int, str]] = {}
        """(partition, offset) -> (position, id) of the final ``$all`` (when it has places)."""
        self.reissued: list[tuple[int, str, str, int, int, str]] = []
        for e in entries:
            self._take(e)

    def _take(self, e: Entry) -> None:
        kind = e["type"]
        if kind == "invoke":
            self.ops[e["op"]] = Op(
                op=e["op"],
                process=e["process"],
                stream=e["stream"],
                expected=e["expected"],
                events=[(str(i), int(n)) for i, n in e["events"]],
                invoked=e["t"],
                retry_of=e.get("retry_of"),
            )
        elif kind in ("ok", "fail", "unknown"):
            op = self.ops[e["op"]]
            op.outcome, op.completed = kind, e["t"]
            if kind == "ok":
                op.from_version, op.created = e["from_version"], e["created"]
            else:
                op.error = str(e.get("error", ""))
        elif kind == "nemesis":
            if e["phase"] == "inject":
                self.phases.append(
                    Window(e["name"], e["t"], loses_acknowledged=bool(e.get("loses_acknowledged")))
                )
            elif self.phases and self.phases[-1].name == e["name"]:
                if e["phase"] == "heal":
                    self.phases[-1].healed = e["t"]
                elif e["phase"] == "end":
                    self.phases[-1].ended = e["t"]
                elif e["phase"] == "note":
                    self.phases[-1].notes[e["key"]] = e["value"]
        elif kind == "observe":
            f = e["f"]
            if f == "stream":
                self.streams[e["stream"]] = [(int(v), str(i)) for v, i in e["events"]]
            elif f == "all":
                self.all_read = [(int(p), s, int(v), str(i)) for p, s, v, i, *_x in e["events"]]
                self.places = {
                    (int(x[0]), int(x[1])): (int(p), str(i))
                    for p, _s, _v, i, *x in e["events"]
                    if len(x) == 2
                }
            elif f == "tail":
                page = [(int(p), s, int(v), str(i)) for p, s, v, i, *_x in e["events"]]
                self.tails.setdefault(e["process"], []).append((e["t"], page))
            elif f == "delivered":
                rows = e["events"]
                self.delivered[e["process"]] = [(s, int(v), str(i)) for s, v, i, *_t in rows]
                for _s, _v, i, *t in rows:
                    if t and t[0] is not None:
                        first = self.delivered_at.get(str(i), float(t[0]))
                        self.delivered_at[str(i)] = min(first, float(t[0]))
            elif f == "projection":
                self.projections[e["process"]] = {s: list(x) for s, x in e["state"].items()}
            elif f == "reissued":
                self.reissued += [
                    (int(x), w, str(i), int(p), int(o), when)
                    for x, w, i, p, o, when in e["messages"]
                ]

    def fail(self, kind: str, detail: str, event: str | None = None) -> None:
        op = self.carrier.get(event) if event is not None else None
        self.violations.append(Violation(kind, detail, event, op.op if op else None))

    # -- what the history says about each event id ---------------------------------------

    def classify(self) -> None:
        # An op belongs to the last fault whose window [injected, ended) overlaps the op's own
        # [invoked, completed]: a cut made inside a batch already in flight hits the appends
        # invoked before it (a crashed client's op, never completed, counts at its invocation).
        for op in self.ops.values():
            done = op.completed if op.completed is not None else op.invoked
            for phase in self.phases:
                end = phase.ended if phase.ended is not None else float("inf")
                if phase.injected <= done and op.invoked < end:
                    op.phase = phase.name
        self.acked: dict[str, tuple[str, int]] = {}
        self.acked_by: dict[str, Op] = {}
        self.carrier: dict[str, Op] = {}  # the first op that carried the id
        self.n_of: dict[str, int] = {}
        maybe: set[str] = set()
        for op in sorted(self.ops.values(), key=lambda o: o.op):
            for i, (event, n) in enumerate(op.events):
                self.carrier.setdefault(event, op)
                self.n_of[event] = n
                if op.outcome == "ok":
                    assert op.from_version is not None
                    at = (op.stream, op.from_version + i)
                    if event in self.acked and self.acked[event] != at:
                        self.fail(
                            "wrong_version",
                            f"event {event} acknowledged at {self.acked[event]} and at {at}",
                            event,
                        )
                    self.acked.setdefault(event, at)
                    self.acked_by.setdefault(event, op)
                elif op.outcome == "unknown":
                    maybe.add(event)
        self.maybe = maybe - set(self.acked)
        present = {i for events in self.streams.values() for _v, i in events}
        self.committed = set(self.acked) | (self.maybe & present)

    def excused(self, event: str) -> bool:
        """Acknowledged while a fault that may lose acknowledged events was on (from its
        injection to its heal: what was committed before it was durable)."""
        op = self.acked_by.get(event)
        if op is None or op.completed is None:
            return False
        done = op.completed
        return any(
            p.loses_acknowledged and p.injected <= done <= (p.healed or float("inf"))
            for p in self.phases
        )

    def judge_id(self, event: str, where: str) -> bool:
        """A read or delivered id: a phantom unless the history allows it (reported)."""
        if event in self.committed:
            return True
        op = self.carrier.get(event)
        why = "no operation carried it" if op is None else f"op {op.op} {op.outcome}"
        self.fail("phantom", f"{where}: event {event} ({why})", event)
        return False

    # -- the checks ------------------------------------------------------------------------

    def check_streams(self) -> None:
        for stream, events in sorted(self.streams.items()):
            versions = [v for v, _i in events]
            if versions != list(range(1, len(events) + 1)):
                self.fail("version_gap", f"stream {stream} has versions {_runs(versions)}")
            for event, count in Counter(i for _v, i in events).items():
                if count > 1:
                    self.fail("duplicate", f"stream {stream}: event {event} x{count}", event)
            for version, event in events:
                known = self.judge_id(event, f"stream {stream}") and event in self.acked
                if known and self.acked[event] != (stream, version):
                    self.fail(
                        "wrong_version",
                        f"event {event} acknowledged at {self.acked[event]}, read at "
                        f"{stream}@{version}",
                        event,
                    )
        # All or nothing for each operation whose outcome the client does not know.
        present = {i for events in self.streams.values() for _v, i in events}
        for op in self.ops.values():
            if op.outcome != "ok" and any(e in self.maybe for e, _n in op.events):
                seen = [e in present for e, _n in op.events]
                if any(seen) and not all(seen):
                    self.fail(
                        "partial",
                        f"op {op.op} on {op.stream}: {sum(seen)} of {len(seen)} events visible",
                        op.events[0][0],
                    )
        self.lost_in("stream reads", present)
        self.check_idempotency()

    def check_idempotency(self) -> None:
        """The ``created`` flag of every acknowledgement (README "How an append works",
        docs/design.md section 5): re-sending events whose ids are committed is answered with
        the original result and ``created`` False; anything else that is acknowledged wrote, and
        says ``created`` True. So ``created`` True is wrong once the ids were committed before the
        append was sent (an earlier append acknowledged them, or the tail read one of them), and
        ``created`` False is wrong when no earlier append that may have committed carried them.
        Evidence from a fault that may lose acknowledged events (until its heal) does not count:
        the commit it saw may be gone, and the retry may rightly write anew."""
        carriers: dict[str, list[Op]] = {}
        for op in sorted(self.ops.values(), key=lambda o: o.invoked):
            for event, _n in op.events:
                carriers.setdefault(event, []).append(op)
        for op in self.ops.values():
            if op.outcome != "ok" or not op.events:
                continue
            earlier = {
                o.op: o
                for event, _n in op.events
                for o in carriers[event]
                if o is not op and o.invoked <= op.invoked
            }
            if op.created is False:
                if not any(o.outcome in ("ok", "unknown") for o in earlier.values()):
                    self.fail(
                        "idempotency",
                        f"op {op.op} on {op.stream} was answered as a repeat (created false), "
                        "but no earlier append that may have committed carried its ids",
                        op.events[0][0],
                    )
                continue
            evidence = [
                (o.completed, f"op {o.op} acknowledged them at {o.completed:.3f}")
                for o in earlier.values()
                if o.outcome == "ok" and o.completed is not None and o.completed < op.invoked
            ]
            evidence += [
                (self.first_seen[e], f"the tail read {e} at {self.first_seen[e]:.3f}")
                for e, _n in op.events
                if self.first_seen.get(e, float("inf")) < op.invoked
            ]
            for when, why in evidence:
                if not self.commit_may_be_lost(when, op):
                    self.fail(
                        "idempotency",
                        f"op {op.op} on {op.stream}, sent at {op.invoked:.3f}, was answered "
                        f"created (written anew) though its ids were committed before: {why}",
                        op.events[0][0],
                    )
                    break

    def commit_may_be_lost(self, when: float, op: Op) -> bool:
        """Whether a commit seen at ``when`` may have been lost before ``op`` completed (a
        fault that allows acknowledged loss was on at ``when`` and not over before ``op``)."""
        return any(
            p.loses_acknowledged
            and p.injected <= when <= (p.healed if p.healed is not None else float("inf"))
            and (op.completed or op.invoked) >= p.injected
            for p in self.phases
        )

    def lost_in(self, where: str, present: set[str]) -> None:
        for event in sorted(set(self.acked) - present):
            if self.excused(event):
                self.lost_by_setting.add(event)
            else:
                stream, version = self.acked[event]
                self.fail("lost", f"{where}: acknowledged {event} ({stream}@{version})", event)

    def check_all(self) -> None:
        if self.all_read is None:
            return
        positions = [p for p, _s, _v, _i in self.all_read]
        if positions != list(range(1, len(positions) + 1)):
            self.fail("all_gap", f"$all has positions {_runs(positions)}")
        for event, count in Counter(i for *_x, i in self.all_read).items():
            if count > 1:
                self.fail("duplicate", f"$all: event {event} x{count}", event)
        last: dict[str, int] = {}
        in_streams = {i: (s, v) for s, evs in self.streams.items() for v, i in evs}
        for position, stream, version, event in self.all_read:
            if not self.judge_id(event, f"$all@{position}"):
                continue
            if version <= last.get(stream, 0):
                self.fail("order", f"$all@{position}: {stream}@{version} after v{last[stream]}")
            last[stream] = version
            if in_streams.get(event, (stream, version)) != (stream, version):
                self.fail(
                    "wrong_version",
                    f"$all@{position} has {event} at {stream}@{version}, its stream read at "
                    f"{in_streams[event]}",
                    event,
                )
        self.lost_in("$all", {i for *_x, i in self.all_read})

    def check_reissued(self) -> None:
        """The messages of a transaction whose xid PostgreSQL handed out again after a crash
        (``before``) never committed: none may be in the final ``$all`` at its place. (The ones
        of the transaction that got the xid again, ``after``, are judged like any other.)"""
        for xid, write, event, partition, offset, when in self.reissued:
            held = self.places.get((partition, offset))
            if when == "before" and held is not None:
                self.fail(
                    "phantom",
                    f"$all@{held[0]} holds {held[1]} from {partition}/{offset}, a message of "
                    f"transaction {write}, whose xid {xid} was handed out again after a crash: "
                    "that transaction never committed",
                    event,
                )

    def check_tails(self) -> None:
        final = {p: i for p, _s, _v, i in self.all_read or []}
        rewound = any(p.loses_acknowledged for p in self.phases)
        for process, pages in sorted(self.tails.items()):
            expect = 1
            for _t, page in pages:
                for position, stream, _version, event in page:
                    if position != expect:
                        self.fail("tail_skip", f"tail {process}: {position} after {expect - 1}")
                    expect = position + 1
                    self.judge_id(event, f"tail {process} $all@{position}")
                    if self.all_read is not None and final.get(position) != event:
                        if rewound:
                            self.tail_rewound += 1
                        else:
                            self.fail(
                                "tail_mismatch",
                                f"tail {process} saw {event} ({stream}) at {position}, the final "
                                f"$all has {final.get(position)}",
                                event,
                            )

    def check_delivered(self) -> None:
        for process, events in sorted(self.delivered.items()):
            for event, count in Counter(i for *_x, i in events).items():
                if count > 1:
                    self.fail("duplicate", f"{process} delivered {event} x{count}", event)
            last: dict[str, int] = {}
            once: set[str] = set()
            for stream, version, event in events:
                if event in once or not self.judge_id(event, f"{process} delivery"):
                    continue  # a repeat is a duplicate (above), not also out of order
                once.add(event)
                if version <= last.get(stream, 0):
                    self.fail("order", f"{process}: {stream}@{version} after v{last[stream]}")
                last[stream] = version
            self.lost_in(f"{process} deliveries", {i for *_x, i in events})

    def check_projections(self) -> None:
        # The model: every committed event the store still has (an acknowledged event lost by
        # the setting of a fault is gone from the store, and so from what a projection sees).
        model: dict[str, list[int]] = {}
        for event in self.committed - self.lost_by_setting:
            op = self.carrier[event]
            version = self._version_of(event)
            state = model.setdefault(op.stream, [0, 0, 0])
            state[0] += 1
            state[1] += self.n_of[event]
            state[2] = max(state[2], version)
        for process, projected in sorted(self.projections.items()):
            for stream in sorted(set(model) | set(projected)):
                if projected.get(stream) != model.get(stream):
                    self.fail(
                        "projection",
                        f"{process}: {stream} is {projected.get(stream)}, the history says "
                        f"{model.get(stream)} (count, sum, last version)",
                    )

    def _version_of(self, event: str) -> int:
        if event in self.acked:
            return self.acked[event][1]
        for stream_events in self.streams.values():
            for version, i in stream_events:
                if i == event:
                    return version
        return 0

    def run(self) -> Verdict:
        self.lost_by_setting: set[str] = set()
        self.tail_rewound = 0
        self.first_seen: dict[str, float] = {}
        for pages in self.tails.values():
            for t, page in pages:
                for *_x, event in page:
                    self.first_seen[event] = min(t, self.first_seen.get(event, t))
        self.classify()
        self.check_streams()
        self.check_all()
        self.check_reissued()
        self.check_tails()
        self.check_delivered()
        if self.projections:
            self.check_projections()
        return Verdict(self._dedupe(), self.report(), self.totals())

    def _dedupe(self) -> list[Violation]:
        seen: set[tuple[str, str]] = set()
        out = []
        for v in self.violations:
            if (v.kind, v.detail) not in seen:
                seen.add((v.kind, v.detail))
                out.append(v)
        return out

    def totals(self) -> dict[str, int]:
        return {
            "operations": len(self.ops),
            "acknowledged_events": len(self.acked),
            "unknown_operations": sum(o.outcome == "unknown" for o in self.ops.values()),
            "streams_read": len(self.streams),
            "all_read": len(self.all_read or []),
            "tail_read": sum(len(p) for pages in self.tails.values() for _t, p in pages),
            "delivered": sum(len(d) for d in self.delivered.values()),
            "lost_by_setting": len(self.lost_by_setting),
            "tail_rewound": self.tail_rewound,
            "xids_reissued": len({x for x, *_r in self.reissued}),
            "reissued_read_before": sum(
                when == "before" and (p, o) in self.places for *_x, p, o, when in self.reissued
            ),
            "reissued_read_after": sum(
                when == "after" and (p, o) in self.places for *_x, p, o, when in self.reissued
            ),
        }

    def report(self) -> list[PhaseReport]:
        reports = {BETWEEN: PhaseReport(BETWEEN)}
        for p in self.phases:
            reports[p.name] = PhaseReport(
                p.name, p.injected, p.healed, p.ended, notes=dict(p.notes)
            )
        present = {i for events in self.streams.values() for _v, i in events}
        for op in self.ops.values():
            r = reports[op.phase]
            r.appends += 1
            if op.outcome == "ok":
                r.acknowledged += 1
                r.acknowledged_events += len(op.events)
            elif op.outcome == "fail":
                r.failed += 1
            else:
                r.unknown += 1
                r.settled[self._settlement(op, present)] = (
                    r.settled.get(self._settlement(op, present), 0) + 1
                )
        for v in self.violations:
            phase = self.carrier[v.event].phase if v.event in self.carrier else BETWEEN
            if v.kind == "lost":
                reports[phase].lost += 1
            elif v.kind == "phantom":
                reports[phase].phantoms += 1
            elif v.kind == "duplicate":
                reports[phase].duplicates += 1
        for event in self.lost_by_setting:
            reports[self.carrier[event].phase].lost_by_setting += 1
        recovery_times(
            reports,
            self.phases,
            list(self.ops.values()),
            self.tails,
            self.acked_by,
            delivered_at=self.delivered_at,
        )
        return list(reports.values())

    def _settlement(self, op: Op, present: set[str]) -> str:
        retries = [o for o in self.ops.values() if o.retry_of == op.op and o.outcome != "unknown"]
        if not retries:
            return "unsettled"
        return "committed" if op.events and op.events[0][0] in present else "absent"


def _runs(values: Iterable[int]) -> str:
    """``1-5, 7, 9-10``: a short picture of a sequence with holes."""
    out: list[str] = []
    values = list(values)
    start = prev = None
    for v in [*values, None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = v
        if len(out) > 8:
            out.append("...")
            break
    return ", ".join(out)


def check(entries: Sequence[Entry]) -> Verdict:
    """The verdict on a history (see the module docstring)."""
    return _Check(entries).run()
