"""The load faults run under: writers, a tailing ``$all`` reader, and the final observation.

Writers append to a few *hot* streams (most appends: concurrent writers race on their heads) and
many *cold* ones, with ``no_stream`` (a cold stream's first append), exact (the last version this
run saw acknowledged) and ``any`` expectations, 1-3 events per append with client-chosen ids and
``{"n": <number>}`` data. Some writers use the in-process :class:`kafkastore.client.EventStore`
(one per run, shared by its threads), others the HTTP API. Every append is recorded (invoke, then
ok / fail / unknown, :mod:`verify.history`); an unknown outcome is retried with the same ids
until it settles (the retry is answered idempotently when the first attempt committed).

How outcomes are classified: an acknowledgement is ``ok``; a refusal the contract makes
definite (409, 400, 410, a retryable ``Unavailable`` / 503: rolled back) is ``fail``; an
``OutcomeUnknown`` (503 with ``"outcome": "unknown"``), a timeout, a dropped connection or a
500 is ``unknown``.

The tailing reader reads ``$all`` from position 1 onwards all along the run (each page is an
observation), so the checker can prove it never saw a jump or a phantom. After the run
:meth:`AppendWorkload.observe` waits until the index and the projection have caught up (bounded)
and records the final stream reads, ``$all``, the projection's deliveries and state.

Why this module is longer than ~400 lines: the writers, the tailing reader and the final
observation share one run's state (the heads the writers saw, the outcomes still unknown, the
reader and its position, the streams touched), and the observation must wait on what the
writers recorded; apart, each would need the others' internals.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from kafkastore import pg
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError, OutcomeUnknown, StreamNotFound
from kafkastore.records import NewEvent
from verify import sql
from verify.history import Expected, Recorder

logger = logging.getLogger("kafkastore.verify")

StoreFactory = Callable[[Settings], EventStore]
"""Makes the in-process writers' store (a test substitutes a deliberately broken one)."""

RETRY_DELAY = 0.5
RETRY_ATTEMPTS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    """The shape of the load."""

    python_writers: int = 3
    http_writers: int = 1
    hot_streams: int = 3
    cold_streams: int = 60
    hot_share: float = 0.7
    max_events: int = 3
    pause: float = 0.01
    """Seconds a writer waits between its appends (the load stays within two cores)."""
    catch_up_timeout: float = 180.0
    """How long the observation waits for the index and the projection to hold every
    acknowledged event (a restarted static member may take ``session.timeout.ms``)."""


@dataclass(slots=True)
class _Outcome:
    kind: str  # ok / fail / unknown
    from_version: int = 0
    to_version: int = 0
    created: bool = True
    error: str = ""
    message: str = ""


class AppendWorkload:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        config: WorkloadConfig,
        *,
        api_url: str | None,
        seed: int = 0,
        store_factory: StoreFactory = EventStore,
        watch_projection: bool = True,
    ) -> None:
        self.settings = settings
        self.config = config
        self.api_url = api_url
        self.store_factory = store_factory
        self.watch_projection = watch_projection
        run = uuid.uuid4().hex[:6]
        self.hot_streams = [f"VerifyHot-{run}{i}" for i in range(config.hot_streams)]
        self.cold_streams = [f"VerifyCold-{run}{i}" for i in range(config.cold_streams)]
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._heads: dict[str, int] = {}
        self._heads_lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_tail = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acked = 0
        self._unsettled: list[tuple[int, str, Expected, list[tuple[str, int]], str]] = []
        self._store: EventStore | None = None
        self._reader: EventStore | None = None
        self._recorder: Recorder | None = None
        self._tail_position = 0
        self.touched: set[str] = set()

    # -- the run -------------------------------------------------------------------------

    def start(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._store = self.store_factory(self.settings).open()
        self._reader = EventStore(self.settings)
        writers: list[tuple[str, Callable[[str, Expected, list[tuple[str, int]]], _Outcome]]] = [
            (f"py-{i + 1}", self._append_python) for i in range(self.config.python_writers)
        ]
        if self.api_url:
            writers += [
                (f"http-{i + 1}", self._append_http) for i in range(self.config.http_writers)
            ]
        for name, send in writers:
            self._spawn(name, self._write_loop, name, send)
        self._spawn("tail", self._tail_loop)

    def acknowledged(self) -> int:
        return self._acked

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.name != "verify-tail":
                thread.join(120)
        # Settle what is still unknown: retry with the same ids until an answer is definite.
        for op, stream, expected, events, via in list(self._unsettled):
            send = self._append_http if via == "http" else self._append_python
            self._settle(
                f"settle-{via}",
                op,
                stream=stream,
                expected=expected,
                events=events,
                send=send,
                deadline=60.0,
            )

    def close(self) -> None:
        self._stop.set()
        self._stop_tail.set()
        for thread in self._threads:
            thread.join(30)
        for store in (self._store, self._reader):
            if store is not None:
                store.close()

    # -- writers -------------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"verify-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _choose(self) -> tuple[str, Expected, list[tuple[str, int]]]:
        with self._rng_lock:
            rng = self._rng
            hot = rng.random() < self.config.hot_share
            stream = rng.choice(self.hot_streams if hot else self.cold_streams)
            count = rng.randint(1, self.config.max_events)
            events = [(str(uuid.uuid4()), rng.randint(1, 1000)) for _ in range(count)]
            draw = rng.random()
        with self._heads_lock:
            head = self._heads.get(stream)
        expected: Expected
        if head is None:
            expected = "no_stream" if draw < 0.8 else "any"
        elif draw < 0.45:
            expected = head  # often stale on a hot stream: a definite WrongExpectedVersion
        elif draw < 0.95:
            expected = "any"
        else:
            expected = "no_stream"  # wrong on purpose: a definite refusal
        return stream, expected, events

    def _write_loop(
        self, name: str, send: Callable[[str, Expected, list[tuple[str, int]]], _Outcome]
    ) -> None:
        assert self._recorder is not None
        while not self._stop.is_set():
            stream, expected, events = self._choose()
            via = "http" if name.startswith("http") else "python"
            op = self._attempt(name, stream, expected, events, send, via=via)
            if op is not None:
                self._settle(
                    name,
                    op,
                    stream=stream,
                    expected=expected,
                    events=events,
                    send=send,
                    deadline=30.0,
                )
            time.sleep(self.config.pause)

    def _attempt(
        self,
        name: str,
        stream: str,
        expected: Expected,
        events: list[tuple[str, int]],
        send: Callable[[str, Expected, list[tuple[str, int]]], _Outcome],
        *,
        via: str,
        retry_of: int | None = None,
    ) -> int | None:
        """One append, recorded; returns its op id when the outcome is unknown."""
        assert self._recorder is not None
        self.touched.add(stream)
        op = self._recorder.invoke(name, stream, expected, events, retry_of=retry_of, via=via)
        outcome = send(stream, expected, events)
        if outcome.kind == "ok":
            self._recorder.ok(
                op,
                from_version=outcome.from_version,
                to_version=outcome.to_version,
                created=outcome.created,
            )
            self._acked += 1
            with self._heads_lock:
                self._heads[stream] = max(self._heads.get(stream, 0), outcome.to_version)
            return None
        if outcome.kind == "fail":
            self._recorder.fail(op, outcome.error, outcome.message)
            return None
        self._recorder.unknown(op, outcome.error, outcome.message)
        return op

    def _settle(
        self,
        name: str,
        first: int,
        *,
        stream: str,
        expected: Expected,
        events: list[tuple[str, int]],
        send: Callable[[str, Expected, list[tuple[str, int]]], _Outcome],
        deadline: float,
    ) -> None:
        via = "http" if send == self._append_http else "python"
        until = time.monotonic() + deadline
        for _ in range(RETRY_ATTEMPTS):
            time.sleep(RETRY_DELAY)
            again = self._attempt(name, stream, expected, events, send, via=via, retry_of=first)
            if again is None:
                self._unsettled = [u for u in self._unsettled if u[0] != first]
                return
            if time.monotonic() > until:
                break
        if all(u[0] != first for u in self._unsettled):
            self._unsettled.append((first, stream, expected, events, via))

    def _append_python(
        self, stream: str, expected: Expected, events: list[tuple[str, int]]
    ) -> _Outcome:
        assert self._store is not None
        new = [NewEvent(type="Counted", data={"n": n}, id=uuid.UUID(i)) for i, n in events]
        try:
            result = self._store.append(stream, new, expected)
        except OutcomeUnknown as exc:
            return _Outcome("unknown", error=type(exc).__name__, message=exc.message)
        except KafkaStoreError as exc:
            return _Outcome("fail", error=type(exc).__name__, message=exc.message)
        except (FutureTimeout, TimeoutError) as exc:
            return _Outcome("unknown", error="Timeout", message=repr(exc))
        except Exception as exc:  # the client cannot tell what happened
            return _Outcome("unknown", error=type(exc).__name__, message=repr(exc))
        return _Outcome("ok", result.from_version, result.to_version, result.created)

    def _append_http(
        self, stream: str, expected: Expected, events: list[tuple[str, int]]
    ) -> _Outcome:
        body = {
            "expected_version": expected,
            "events": [{"id": i, "type": "Counted", "data": {"n": n}} for i, n in events],
        }
        request = urllib.request.Request(
            f"{self.api_url}/streams/{stream}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60.0) as response:
                answer = json.loads(response.read())
                return _Outcome(
                    "ok", answer["from_version"], answer["to_version"], response.status == 201
                )
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(Exception):
                answer = json.loads(exc.read())
            answer = answer if isinstance(answer, dict) else {}
            error = str(answer.get("error", exc.code))
            message = str(answer.get("message", ""))
            if exc.code == 503 and answer.get("outcome") == "unknown":
                return _Outcome("unknown", error=error, message=message)
            if exc.code in (400, 409, 410, 413, 503):
                return _Outcome("fail", error=error, message=message)
            return _Outcome("unknown", error=f"HTTP {exc.code} {error}", message=message)
        except (OSError, ValueError) as exc:  # connection refused/reset, timeout, a torn body
            return _Outcome("unknown", error=type(exc).__name__, message=repr(exc))

    # -- the tailing reader ------------------------------------------------------------------

    def _tail_loop(self) -> None:
        assert self._reader is not None and self._recorder is not None
        while not self._stop_tail.is_set():
            try:
                page = self._reader.read_all(from_position=self._tail_position + 1, limit=1000)
            except KafkaStoreError:
                time.sleep(0.5)  # PostgreSQL down or failing over: a reader waits too
                continue
            if page.events:
                self._recorder.observe(
                    "tail",
                    process="tail",
                    events=[
                        [e.global_position, e.stream_id, e.version, str(e.id)] for e in page.events
                    ],
                )
                self._tail_position = int(page.events[-1].global_position or 0)
            else:
                time.sleep(0.05)

    # -- the final observation -------------------------------------------------------------

    def observe(self, recorder: Recorder) -> None:
        assert self._reader is not None
        entries = recorder.entries()
        acked = _durably_acknowledged(entries)
        deadline = time.monotonic() + self.config.catch_up_timeout
        rows = self._read_all()
        while not acked <= {r[3] for r in rows} and time.monotonic() < deadline:
            time.sleep(1.0)
            rows = self._read_all()
        while self._tail_position < len(rows) and time.monotonic() < deadline:
            time.sleep(0.2)
        self._stop_tail.set()
        for thread in self._threads:
            if thread.name == "verify-tail":
                thread.join(30)
        if self.watch_projection:
            while self._delivered_count() < len(rows) and time.monotonic() < deadline:
                time.sleep(1.0)
        for stream in sorted(self.touched):
            recorder.observe("stream", stream=stream, events=self._read_stream(stream))
        recorder.observe("all", events=self._read_all())
        if self.watch_projection:
            delivered, state = self._projection()
            for row in delivered:
                row[3] = recorder.at_wall(float(row[3]))
            recorder.observe("delivered", process="projection", events=delivered)
            recorder.observe("projection", process="projection", state=state)

    def _read_stream(self, stream: str) -> list[list[Any]]:
        assert self._reader is not None
        out: list[list[Any]] = []
        version = 1
        while True:
            try:
                page = self._reader.read_stream(stream, from_version=version, limit=10_000)
            except StreamNotFound:
                return out
            out += [[e.version, str(e.id)] for e in page.events]
            if page.next_version is None or not page.events:
                return out
            version = page.next_version

    def _read_all(self) -> list[list[Any]]:
        assert self._reader is not None
        out: list[list[Any]] = []
        position = 1
        while True:
            page = self._reader.read_all(from_position=position, limit=10_000)
            out += [
                [e.global_position, e.stream_id, e.version, str(e.id), e.partition, e.offset]
                for e in page.events
            ]
            if not page.events:
                return out
            position = int(page.events[-1].global_position or 0) + 1

    def _delivered_count(self) -> int:
        with (
            contextlib.suppress(KafkaStoreError),
            pg.translated(),
            pg.connect(self.settings.database_url, autocommit=True) as conn,
        ):
            exists = conn.execute(sql.TABLES_EXIST).fetchone()
            if exists and exists[0]:
                row = conn.execute(sql.DELIVERED_COUNT).fetchone()
                return int(row[0]) if row else 0
        return 0

    def _projection(self) -> tuple[list[list[Any]], dict[str, list[int]]]:
        with pg.translated(), pg.connect(self.settings.database_url, autocommit=True) as conn:
            exists = conn.execute(sql.TABLES_EXIST).fetchone()
            if not exists or not exists[0]:
                return [], {}
            delivered = [list(r) for r in conn.execute(sql.DELIVERED).fetchall()]
            state = {
                r[0]: [int(r[1]), int(r[2]), int(r[3])] for r in conn.execute(sql.STATE).fetchall()
            }
        return delivered, state


def _durably_acknowledged(entries: list[dict[str, Any]]) -> set[str]:
    """The ids of the events acknowledged outside the faults that may lose acknowledged events
    (from injection to heal): those the index must come to hold. The others may be gone for good
    (the checker counts them apart), and waiting for them would only wait out the timeout."""
    windows: dict[str, list[float]] = {}
    done: dict[int, float] = {}
    for e in entries:
        if e["type"] == "nemesis" and e.get("loses_acknowledged") and e["phase"] == "inject":
            windows[e["name"]] = [e["t"], float("inf")]
        elif e["type"] == "nemesis" and e["phase"] == "heal" and e["name"] in windows:
            windows[e["name"]][1] = e["t"]
        elif e["type"] == "ok":
            done[e["op"]] = e["t"]
    return {
        i
        for e in entries
        if e["type"] == "invoke"
        and e["op"] in done
        and not any(a <= done[e["op"]] <= b for a, b in windows.values())
        for i, _n in e["events"]
    }
