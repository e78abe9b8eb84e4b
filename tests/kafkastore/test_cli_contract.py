"""The CLI's contract: distinct exit codes (one table), ``--version``, a help line for every
option, and no option a subcommand ignores."""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import subprocess
import sys
from importlib import metadata

import pytest

from dev.process import free_port
from kafkastore import cli, commands
from kafkastore.cli import SETTINGS_FLAGS, build_parser, subparsers
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError, OutcomeUnknown, Unavailable
from kafkastore.exitcodes import EXIT_CODES, exit_code_of
from tests.support import settings_environment, unique


def _kafkastore(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKASTORE_")}
    # A dev home without a dev.json: a developer's running stack must not answer these.
    clean["KAFKASTORE_DEV_HOME"] = "/nonexistent"
    return subprocess.run(
        [sys.executable, "-m", "kafkastore.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, **(env or {})},
    )


def test_the_exit_codes_are_distinct_and_each_error_class_has_one() -> None:
    codes = [e.code for e in EXIT_CODES]
    classes = [cls for e in EXIT_CODES for cls in e.errors]

    assert len(set(codes)) == len(codes)
    assert len(set(classes)) == len(classes)
    assert {cls.__name__ for cls in classes} >= {
        name
        for name, obj in vars(sys.modules["kafkastore.errors"]).items()
        if isinstance(obj, type) and issubclass(obj, KafkaStoreError) and obj is not KafkaStoreError
    }
    assert exit_code_of(OutcomeUnknown("lost")) == 4
    assert exit_code_of(Unavailable("down")) == 3


def test_version_prints_the_installed_version() -> None:
    done = _kafkastore("--version")

    assert done.returncode == 0
    assert done.stdout.strip() == f"kafkastore {metadata.version('kafkastore')}"


def test_a_usage_error_exits_2() -> None:
    unknown = _kafkastore("read", "Order-1", "--kafka", "127.0.0.1:9092")
    bad_json = _kafkastore("append", "Order-1", "OrderPlaced", "{not json")

    assert unknown.returncode == 2
    assert "unrecognized arguments: --kafka" in unknown.stderr
    assert bad_json.returncode == 2
    assert "data is not valid JSON" in bad_json.stderr


def test_an_unreachable_service_exits_3() -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    done = _kafkastore("read", "Order-1", "--api", closed)

    assert done.returncode == 3
    assert f"cannot reach {closed}" in done.stderr


def test_a_conflict_exits_1_and_names_the_current_version(settings: Settings) -> None:
    stream = unique("Order")
    env = settings_environment(settings)

    first = _kafkastore(
        "append", stream, "OrderPlaced", "{}", "--expected-version", "no_stream", env=env
    )
    again = _kafkastore(
        "append", stream, "OrderPlaced", "{}", "--expected-version", "no_stream", env=env
    )

    assert first.returncode == 0, first.stderr
    assert again.returncode == 1
    assert f"(Stream: {stream}, Stream Version: 1)" in again.stderr


@pytest.mark.parametrize(
    ("raised", "code"),
    [(OutcomeUnknown("COMMIT reply lost"), 4), (KeyboardInterrupt(), 130)],
    ids=["outcome-unknown", "interrupted"],
)
def test_an_unknown_outcome_and_ctrl_c_have_their_own_codes(
    raised: BaseException, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        raise raised

    monkeypatch.setitem(commands.HANDLERS, "migrate", handler)
    monkeypatch.setenv("KAFKASTORE_DEV_HOME", "/nonexistent")

    assert cli.main(["migrate"]) == code


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


def test_every_option_and_argument_has_a_help_line() -> None:
    parser = build_parser()
    empty = [
        f"{name or 'kafkastore'} {a.dest}"
        for name, p in [("", parser), *subparsers(parser).items()]
        for a in _options(p)
        if not (a.help or "").strip() or a.help == argparse.SUPPRESS
    ]

    assert empty == []


def _args_read_by(function: object) -> set[str]:
    """Attributes of ``args`` the function reads (``args.limit``)."""
    tree = ast.parse(inspect.getsource(function))  # type: ignore[arg-type]
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "args"
    }


# The settings each subcommand's work reads (the rest of its flags are its own options).
SETTINGS_USED = {
    "dev": set(),  # chooses its own ports; a flag would be ignored
    "serve": {"kafka", "database_url", "topic"},
    "indexer": {"kafka", "database_url", "topic"},
    "migrate": {"database_url"},
    "topic create": {"kafka", "topic"},
    "topic describe": {"kafka", "topic"},
    "append": {"kafka", "database_url", "topic"},
    "read": {"database_url", "token"},  # or --api (with the token); never Kafka
    "tail": {"kafka", "database_url", "topic", "token"},  # the token with --api
    "audit": {"kafka", "database_url", "topic"},
    "bench": {"kafka", "database_url"},  # each run makes its own topic
    "verify": set(),  # starts the topology it faults; a flag would be ignored
    "stream metadata": {"kafka", "database_url", "topic"},  # a metadata write is a writer unit
    "scavenge": {"database_url"},
    "db roles": {"database_url"},
    "dlq list": {"kafka", "database_url", "topic"},
    "dlq replay": {"kafka", "database_url", "topic"},  # replays are judged by the verdict rule
    **{
        f"auth {what} {action}": {"database_url"}
        for what, actions in (
            ("user", ("add", "list", "remove")),
            ("token", ("create", "list", "revoke")),
        )
        for action in actions
    },
}
GROUPS = {
    "topic",
    "stream",
    "dlq",
    "auth",
    "auth user",
    "auth token",
    "db",
}  # only their subcommands have options


def test_every_option_of_each_subcommand_is_used() -> None:
    # Read by cli.main / cli.target_of for every subcommand, not by the handlers.
    generic = {
        "verbose",
        "command",
        "topic_command",
        "stream_command",
        "dlq_command",
        "auth_command",
        "auth_action",
        "db_command",
        "api",
    }
    unused: dict[str, list[str]] = {}
    for name, parser in subparsers(build_parser()).items():
        if name in GROUPS:
            continue
        handler = commands.HANDLERS[name.split()[0]]
        read = _args_read_by(handler)
        settings = {a.dest for a in _options(parser) if a.dest in SETTINGS_FLAGS}
        own = {a.dest for a in _options(parser)} - settings - generic
        if settings != SETTINGS_USED[name]:
            unused[name] = sorted(settings ^ SETTINGS_USED[name])
        if own - read:
            unused.setdefault(name, []).extend(sorted(own - read))

    assert unused == {}
    assert set(SETTINGS_USED) == set(subparsers(build_parser())) - GROUPS
