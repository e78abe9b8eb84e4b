"""The history of a verification run: every operation and observation, as JSON lines.

An operation is recorded twice: ``invoke`` before the client call, then exactly one of ``ok``
(acknowledged, with the versions the store answered), ``fail`` (a definite refusal: nothing was
written) or ``unknown`` (the client cannot tell: a lost reply, a timeout, ``OutcomeUnknown``).
A crashed client leaves an ``invoke`` without completion, which the checker treats as unknown.
Observations (``observe``) are what readers saw: a stream read, a ``$all`` read, a tailing
reader's pages, a subscription's deliveries, a projection's state. Nemesis entries mark when a
fault was injected and healed, so the checker can attribute each operation to a fault.

Entries are plain dicts (JSON objects) so that a history written by one run can be checked by
another process; :class:`Recorder` is thread-safe and stamps each entry with the seconds since
the run began (``t``).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

Entry = dict[str, Any]
"""One history entry (see the module docstring for the keys)."""

OpType = Literal["invoke", "ok", "fail", "unknown"]

Expected = int | Literal["any", "no_stream"]
"""An append's expected version, as recorded."""


class Recorder:
    """Collects entries in memory and, when given a path, appends them to a JSON-lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._ids = itertools.count(1)
        self._start = time.monotonic()
        self._wall_start = time.time()
        self._file = path.open("a", encoding="utf-8") if path is not None else None
        self.path = path

    def now(self) -> float:
        """Seconds since the recorder was made (the ``t`` of entries)."""
        return time.monotonic() - self._start

    def at_wall(self, epoch: float) -> float:
        """The ``t`` of a moment given as seconds since the epoch (a time another process
        stamped, e.g. PostgreSQL's ``clock_timestamp()`` on this machine)."""
        return round(epoch - self._wall_start, 6)

    def add(self, entry: Entry) -> Entry:
        """Stamp ``entry`` with ``t`` (unless it has one) and record it."""
        entry.setdefault("t", round(self.now(), 6))
        with self._lock:
            self._entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        return entry

    def invoke(
        self,
        process: str,
        stream: str,
        expected: Expected,
        events: Iterable[tuple[str, int]],
        *,
        retry_of: int | None = None,
        via: str = "python",
    ) -> int:
        """Record an append about to be sent; ``events`` are ``(event id, n)`` pairs (``n`` is
        the number the event's data carries, for the projection's model). Returns the op id."""
        op = next(self._ids)
        self.add(
            {
                "type": "invoke",
                "op": op,
                "process": process,
                "f": "append",
                "via": via,
                "stream": stream,
                "expected": expected,
                "events": [[i, n] for i, n in events],
                "retry_of": retry_of,
            }
        )
        return op

    def ok(self, op: int, *, from_version: int, to_version: int, created: bool) -> None:
        """Op ``op`` was acknowledged at these versions (``created`` False: a repeat)."""
        self.add(
            {
                "type": "ok",
                "op": op,
                "from_version": from_version,
                "to_version": to_version,
                "created": created,
            }
        )

    def fail(self, op: int, error: str, message: str = "") -> None:
        """Op ``op`` was refused definitely (nothing of it was written)."""
        self.add({"type": "fail", "op": op, "error": error, "message": message[:300]})

    def unknown(self, op: int, error: str, message: str = "") -> None:
        """The client cannot tell whether op ``op`` was written."""
        self.add({"type": "unknown", "op": op, "error": error, "message": message[:300]})

    def observe(self, f: str, **fields: Any) -> None:
        """An observation: ``f`` is ``stream``, ``all``, ``tail``, ``delivered`` or
        ``projection`` (see :mod:`verify.checker` for each one's fields)."""
        self.add({"type": "observe", "f": f, **fields})

    def nemesis(self, name: str, phase: str, **fields: Any) -> None:
        """A fault's ``inject`` / ``heal`` / ``start`` / ``end`` moment."""
        self.add({"type": "nemesis", "name": name, "phase": phase, **fields})

    def entries(self) -> list[Entry]:
        """A copy of every entry so far, in order."""
        with self._lock:
            return list(self._entries)

    def close(self) -> None:
        """Close the file (entries stay readable in memory); safe to call twice."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def load(path: Path) -> list[Entry]:
    """The entries of a JSON-lines history file."""
    return list(read_lines(path.read_text(encoding="utf-8").splitlines()))


def read_lines(lines: Iterable[str]) -> Iterator[Entry]:
    """The entries of JSON lines (blank lines skipped)."""
    for line in lines:
        if line.strip():
            yield json.loads(line)
