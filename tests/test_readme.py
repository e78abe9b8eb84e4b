"""The README's examples run, in the order written, against a fresh dev stack on free ports.

Every ``sh``/``bash`` and ``python`` fenced block of README.md runs in turn, as a user pasting
them into one terminal in the checkout would: shell blocks in ``bash -euo pipefail`` with the
variables exported by the blocks before them, Python blocks with ``.venv/bin/python`` in that
environment. A block that cannot run unattended is marked by an
HTML comment right before it, ``<!-- not-run: why -->``; every other block must succeed.

The stack is ``kafkastore dev --detach`` in a home of its own (``KAFKASTORE_DEV_HOME``) on free
ports, so the examples also show that commands follow the checkout's stack (``dev env``, the CLI
and ``EventStore.connect()``), never whatever listens on 9092/5432/8080.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dev import postgres as dev_postgres
from dev.command import stop_in
from dev.process import free_port
from kafkastore.manifest import FILE_NAME, Manifest
from kafkastore.retry import Backoff
from tests.support.services import session_workdir

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELLS = {"sh", "bash", "shell"}
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<why>.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
BLOCK_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block of the README."""

    line: int
    """Its first line (1-based, the fence)."""
    language: str
    code: str
    not_run: str | None
    """Why it is not run, from its ``<!-- not-run: ... -->`` marker; None: it runs."""

    @property
    def runnable(self) -> bool:
        return self.language in SHELLS | {"python"} and self.not_run is None


def blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, in order, with their not-run markers."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start, language = i, match["lang"]
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = NOT_RUN.search(before)
        found.append(
            Block(start + 1, language, "\n".join(body) + "\n", marker["why"] if marker else None)
        )
        i += 1
    return found


def test_the_block_parser_sees_languages_and_markers() -> None:
    text = "x\n```sh\necho 1\n```\n<!-- not-run: forever -->\n\n```python\nwhile True: pass\n```\n"

    parsed = blocks(text)

    assert [(b.line, b.language, b.not_run, b.runnable) for b in parsed] == [
        (2, "sh", None, True),
        (7, "python", "forever", False),
    ]
    assert parsed[0].code == "echo 1\n"


def test_every_readme_block_names_its_language_and_each_marker_says_why() -> None:
    parsed = blocks(README.read_text())

    assert [b.line for b in parsed if not b.language] == []
    assert [b.line for b in parsed if b.not_run is not None and not b.not_run.strip()] == []
    assert sum(b.runnable for b in parsed) >= 5


@pytest.fixture(scope="module")
def readme_stack() -> Iterator[Path]:
    """A fresh ``kafkastore dev --detach`` on free ports; its home (with dev.json)."""
    # Under .kafkastore/, not tmp_path: as root the server runs as `postgres`, which must be
    # able to reach its data directory.
    home = session_workdir() / f"readme-{time.monotonic_ns()}"
    home.mkdir(parents=True)
    kafka, pg, api = (str(free_port()) for _ in range(3))
    ports = ["--kafka-port", kafka, "--pg-port", pg, "--api-port", api]
    # As a user starts it: its own process, which returns once the stack is ready.
    done = subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", "dev", "--detach", *ports],
        env=_user_environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        assert done.returncode == 0, f"kafkastore dev --detach failed:\n{done.stderr}"
        yield home
    finally:
        assert stop_in(home) == 0
        # As root the cluster's files live outside the home (dev.postgres.cluster_files).
        dev_postgres.remove(home / "postgres")
    shutil.rmtree(home, ignore_errors=True)


def _user_environment(home: Path) -> dict[str, str]:
    """A new user's shell in the checkout: no KAFKASTORE_* of ours, the test's stack as the
    checkout's stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKASTORE_")}
    env["KAFKASTORE_DEV_HOME"] = str(home)
    return env


def _run(block: Block, state: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if block.language == "python":
        # The variables exported so far, then the block as a program (so __name__ == "__main__").
        script = f'source {state}\nexec {sys.executable} -c "$README_BLOCK"\n'
        env = {**env, "README_BLOCK": block.code}
    else:
        script = f"source {state}\n{block.code}\nexport -p > {state}\n"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


@pytest.mark.slow
def test_the_readme_examples_run_in_order_against_a_fresh_stack(
    readme_stack: Path, tmp_path: Path
) -> None:
    parsed = [b for b in blocks(README.read_text()) if b.runnable]
    state = tmp_path / "exports.sh"
    state.write_text("")
    env = _user_environment(readme_stack)
    ran: list[int] = []

    for block in parsed:
        done = _run(block, state, env)
        hint = ""
        if "127.0.0.1:8080" in block.code:
            hint = "\n(hint: the stack's API is $KAFKASTORE_API_URL, not 127.0.0.1:8080)"
        assert done.returncode == 0, (
            f"README.md line {block.line} ({block.language}) exited with {done.returncode}:\n"
            f"{block.code}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}{hint}"
        )
        ran.append(block.line)

    assert ran == [b.line for b in parsed]
    assert {b.language for b in parsed} >= {"sh", "python"}


@pytest.mark.slow
def test_commands_in_the_checkout_reach_its_stack_without_any_variable(
    readme_stack: Path, tmp_path: Path
) -> None:
    # A checkout whose .kafkastore/dev.json is the test stack's, and a shell inside it with no
    # KAFKASTORE_* variable at all: the CLI finds the stack from the current directory upwards.
    checkout = tmp_path / "checkout"
    (checkout / ".kafkastore").mkdir(parents=True)
    (checkout / "src").mkdir()
    shutil.copy(readme_stack / FILE_NAME, checkout / ".kafkastore" / FILE_NAME)
    manifest = Manifest.load(readme_stack / FILE_NAME)
    assert manifest is not None and manifest.api is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKASTORE_")}
    kafkastore = [sys.executable, "-m", "kafkastore.cli"]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*kafkastore, *argv],
            cwd=checkout / "src",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    appended = run("append", "Checkout-1", "Found", '{"by": "cwd"}', "--expected-version", "0")
    for _ in Backoff(initial=0.2, maximum=1.0).attempts(timeout=30):
        read = run("read", "Checkout-1")  # 1 (stream_not_found) until the indexer has it
        if read.returncode != 1:
            break

    assert appended.returncode == 0, appended.stderr
    assert f"using Kafka {manifest.kafka}, PostgreSQL {manifest.database_url}" in appended.stderr
    assert f"(the dev stack of {checkout / '.kafkastore' / FILE_NAME})" in appended.stderr
    assert read.returncode == 0, read.stderr
    assert f"API {manifest.api}" in read.stderr  # read goes through the stack's API
    assert '"type":"Found"' in read.stdout or '"type": "Found"' in read.stdout
