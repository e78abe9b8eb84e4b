"""schemathesis against a live ``kafkastore serve`` (real Kafka and PostgreSQL, an indexer):
every route of ``/openapi.json`` but the live subscriptions, every check (``--checks all``),
with auth off (every phase: examples, coverage, fuzzing, and the stateful phase that follows
the links between operations) and with auth on (an admin's token; a plain user's). The
document must be exact: zero failures, zero errors, no 5xx; every phase a run is given must
run (the examples phase has the document's examples, the stateful phase its links, written in
it and inferred by schemathesis, and it must follow at least :data:`MIN_LINKS` of them).

Bounds (2 cores): :data:`EXAMPLES` test cases per operation and phase with auth off (30, as
the issue that introduced this test asked: the first run at 30 found what the runs at 10 and 5
had missed, a ``max_age`` of millions of years that broke the stream's reads and the indexer),
:data:`AUTH_ON_EXAMPLES` with auth on, :data:`WAITING_READ_EXAMPLES` for the read that waits,
one worker per run, a fixed seed (a failure reproduces), requests time out after
:data:`REQUEST_TIMEOUT` (above the longest wait a read may take, ``read_max_wait``), and the
runs go at once (their requests' waits overlap): about 2-3 minutes in all. The app runs with
the defaults users get.

The live subscriptions (``/subscribe/...``) are left out: their 200 answer is a stream that by
design never ends (a browser's EventSource reconnects), which a fuzzer's request cannot wait
for. Their error answers are checked by ``test_openapi.py`` and ``tests/indexer/test_sse.py``.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafkastore import schema
from kafkastore.config import Settings
from tests.support import unique
from tests.support.databases import temporary_database
from tests.support.serving import serving, users_with_tokens
from tests.support.topics import own_settings

pytestmark = pytest.mark.timeout(1500)  # the module fixture runs everything, within RUN_TIMEOUT

EXAMPLES = 30
"""Test cases per operation (and per phase)."""
AUTH_ON_EXAMPLES = 10
"""Test cases per operation (and phase) with auth on: the runs go at once, and their duration
is the auth-off run's; fewer cases leave it more of the 2 cores."""
WAITING_READ_EXAMPLES = 10
"""Test cases of ``GET /streams/{stream_id}`` (per phase): many of its cases wait the whole
``timeout_ms`` (up to ``read_max_wait``, 30 s) for a ``min_version`` never reached, and one
operation's cases run one after the other, so its count sets the duration of a run."""
RUN_TIMEOUT = 900
"""Seconds: a run still going then is killed (and fails)."""
REQUEST_TIMEOUT = 45
"""Seconds: longer than ``read_max_wait`` (30 s), the longest a ``min_version`` read waits."""
SEED = 20261201
EXCLUDED = "^/subscribe/"
"""Live subscriptions: see the module docstring."""

# What a schema-valid request may get because of the store's state, not its shape: 304 (a read
# whose ETag matches), 404 (no such stream, user, token, group handler), 409 (a wrong expected
# version, an existing user) and 410 (a stream that was hard-deleted). Narrower than
# schemathesis's default, which also takes 401, 403, 429 and every 5xx: an app with auth off, or
# an admin's token, must never answer 401 or 403 to a valid request; a plain user's token gets
# 403 where the default ACLs refuse it (the admin routes, $all, metrics, deletes).
ACCEPTED = ["2xx", "3xx", "404", "409", "410"]
PLAIN_ACCEPTED = [*ACCEPTED, "403"]
MIN_LINKS = 3
"""Distinct links (OpenAPI ``links``, written or inferred) the stateful phase must follow."""


@dataclass
class Run:
    """What one schemathesis run did, from its NDJSON report."""

    returncode: int
    output: str
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    phases: dict[str, str] = field(default_factory=dict)
    given: list[str] = field(default_factory=list)
    """The phases the run was asked for."""
    stateful_cases: int = 0
    links: collections.Counter[str] = field(default_factory=collections.Counter)
    """Each link the stateful phase followed (``POST /streams/{stream_id} -> [201] ...``)."""
    seconds: float = 0.0

    def figures(self) -> str:
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        return (
            f"{len(self.operations)} operations, {self.cases} test cases, "
            f"{sum(self.statuses.values())} requests, {server_errors} 5xx, "
            f"{len(self.failures)} failures, {len(self.errors)} errors, {self.seconds:.0f} s; "
            f"stateful: {self.stateful_cases} test cases, {len(self.links)} links followed"
        )


def start_schemathesis(
    base_url: str,
    work: Path,
    *,
    token: str | None = None,
    phases: str = "examples,coverage,fuzzing,stateful",
    examples: int = EXAMPLES,
    exclude: str = EXCLUDED,
    accepted: list[str] = ACCEPTED,
) -> Started:
    """Start ``st run`` against ``base_url`` (its output and report go to ``work``); a valid
    request must get one of the ``accepted`` statuses."""
    work.mkdir(parents=True)
    config = work / "schemathesis.toml"
    config.write_text(
        f"[checks.positive_data_acceptance]\nexpected-statuses = {json.dumps(accepted)}\n"
        "[[operations]]\n"
        'include-method = "GET"\n'
        'include-path = "/streams/{stream_id}"\n'
        f"generation.max-examples = {min(examples, WAITING_READ_EXAMPLES)}\n"
    )
    argv = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(examples),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--exclude-path-regex",
        exclude,
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--max-response-time",
        str(REQUEST_TIMEOUT),
        "--generation-database",
        "none",
        # How fast hypothesis builds a case is no property of the API (nested bodies with
        # patterns are slow to draw on a loaded 2-core machine).
        "--suppress-health-check",
        "too_slow",
        "--report",
        "ndjson",
        "--report-dir",
        str(work / "reports"),
    ]
    if token is not None:
        argv += ["--header", f"Authorization: Bearer {token}"]
    out = (work / "output.txt").open("w")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=work
    )
    out.close()
    return Started(proc, work, time.monotonic(), phases.split(","))


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    work: Path
    at: float
    phases: list[str]

    def finish(self, timeout: float) -> Run:
        """Wait for the run (killed after ``timeout`` seconds) and read its report."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        output = (self.work / "output.txt").read_text()
        run = Run(
            self.proc.returncode, output, given=self.phases, seconds=time.monotonic() - self.at
        )
        for report in (self.work / "reports").glob("*.ndjson"):
            for line in report.read_text().splitlines():
                _read_event(run, json.loads(line))
        return run


def _read_event(run: Run, event: dict[str, Any]) -> None:
    """Fold one NDJSON event of the report into ``run``."""
    if "EngineFinished" in event:
        run.seconds = float(event["EngineFinished"]["running_time"])
    if "PhaseFinished" in event:
        finished = event["PhaseFinished"]
        run.phases[finished["phase"]["name"]] = finished["status"]
    if "ScenarioFinished" not in event:
        return
    scenario = event["ScenarioFinished"]
    recorder = scenario.get("recorder", {})
    label = recorder.get("label")
    if label and " /" in label:  # "GET /all"; the stateful phase's scenarios are not one
        run.operations.add(label)
    cases = recorder.get("cases", {})
    run.cases += len(cases)
    if scenario.get("phase") == "stateful":
        run.stateful_cases += len(cases)
        run.links.update(
            case["transition"]["id"]
            for case in cases.values()
            if case.get("is_transition_applied") and "transition" in case
        )
    for interaction in recorder.get("interactions", {}).values():
        response = interaction.get("response")
        if response is not None:
            run.statuses[int(response["status_code"])] += 1
    for checks in recorder.get("checks", {}).values():
        for check in checks:
            if check.get("status") == "failure":
                run.failures.append(f"{label}: {check.get('name')}")
    if scenario.get("status") == "error":
        run.errors.append(str(label))


def assert_clean(run: Run) -> None:
    print(run.figures())  # shown with -s or -rP, and with a failure
    assert run.failures == [], run.output
    assert run.errors == [], run.output
    assert run.returncode == 0, run.output
    assert [s for s in run.statuses if s >= 500] == [], run.statuses
    # Not a vacuous run: every phase it was given ran (none skipped) and succeeded, on every
    # operation; the stateful phase followed links (its scenarios chain requests by them).
    ran = {name: status for name, status in run.phases.items() if status != "skip"}
    assert set(ran.values()) == {"success"}, run.phases
    assert {phase: run.phases.get(phase) for phase in run.given} == dict.fromkeys(
        run.given, "success"
    ), run.phases
    assert len(run.operations) >= 20, run.operations
    assert run.cases >= 3 * len(run.operations), run.figures()
    if "stateful" in run.given:
        assert run.stateful_cases > 0, run.figures()
        assert len(run.links) >= MIN_LINKS, sorted(run.links)


@dataclass
class Runs:
    done: dict[str, Run]
    admin_after: int
    """The status of ``GET /auth/users`` with the admin's token after the runs."""


@pytest.fixture(scope="module")
def runs(kafka_bootstrap: str, database_url: str, logs_dir: Path) -> Runs:
    """Every run at once (each ``st`` is one process; their requests' waits overlap): auth off,
    every phase; auth on with an admin's token, every phase but coverage (its boundary cases
    are those of the auth-off run; the checks of credentials run in every phase); a plain
    user's token, fuzzing only (most answers are 403).

    With auth on, the runs leave out the two admin deletes: they may delete the run's own user
    or revoke its token (the links lead there), and the rest of the run would be 401s. They are
    fuzzed with auth off, where no token is needed."""
    work = logs_dir / unique("schemathesis")
    with temporary_database(database_url) as off_db, temporary_database(database_url) as on_db:
        schema.migrate(off_db)
        schema.migrate(on_db)
        return _run_all(
            own_settings(kafka_bootstrap, off_db),
            own_settings(kafka_bootstrap, on_db, auth="on"),
            logs_dir,
            work,
        )


def _run_all(off: Settings, on: Settings, logs_dir: Path, work: Path) -> Runs:
    # Each app has a database of its own: the auth-off run adds and deletes users too, and it
    # must not delete the auth-on run's admin (nor leave its streams in the session's database).
    tokens = users_with_tokens(on.database_url, {"admin": ("admin",), "plain": ()}, unique("fuzz"))
    on_exclude = f"{EXCLUDED}|^/auth/(users/[{{]name[}}]|tokens/[{{]token_id[}}])$"
    off_log, on_log = logs_dir / "schemathesis-off.log", logs_dir / "schemathesis-on.log"
    with serving(off, off_log) as off_url, serving(on, on_log) as on_url:
        started = {
            "auth off": start_schemathesis(off_url, work / "off"),
            "auth on, admin": start_schemathesis(
                on_url,
                work / "admin",
                token=tokens["admin"],
                phases="examples,fuzzing,stateful",
                examples=AUTH_ON_EXAMPLES,
                exclude=on_exclude,
            ),
            "auth on, plain": start_schemathesis(
                on_url,
                work / "plain",
                token=tokens["plain"],
                phases="fuzzing",
                examples=AUTH_ON_EXAMPLES,
                exclude=on_exclude,
                accepted=PLAIN_ACCEPTED,
            ),
        }
        done = {name: run.finish(timeout=RUN_TIMEOUT) for name, run in started.items()}
        admin = httpx.get(
            f"{on_url}/auth/users", headers={"Authorization": f"Bearer {tokens['admin']}"}
        )
    return Runs(done, admin.status_code)


@pytest.mark.parametrize("name", ["auth off", "auth on, admin", "auth on, plain"])
def test_schemathesis_finds_nothing(runs: Runs, name: str) -> None:
    assert_clean(runs.done[name])


def test_the_admin_token_worked_to_the_end(runs: Runs) -> None:
    assert runs.admin_after == 200
