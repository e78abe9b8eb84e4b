"""The ``kafkastore`` command line: thin subcommands over the same functions the tests call.

Configuration, per setting: flags > ``KAFKASTORE_*`` variables > the running dev stack of the
checkout (``.kafkastore/dev.json``) > defaults (:mod:`kafkastore.target`). Each command says on
stderr which stack it talks to when that is not the default one. A subcommand offers only the
settings flags it uses (:data:`SETTINGS_FLAGS`).

Our errors are printed as one line and end the command with an exit code of
:data:`~kafkastore.exitcodes.EXIT_CODES` (docs/cli.md has the same table); tracebacks are for
bugs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError
from kafkastore.exitcodes import EXIT_CODES, EXIT_INTERRUPTED, exit_code_of
from kafkastore.target import Target, resolve

Handler = Callable[[argparse.Namespace, Settings], int]


SETTINGS_FLAGS: dict[str, tuple[str, str]] = {
    "kafka": ("--kafka", "Kafka bootstrap servers (KAFKASTORE_KAFKA)"),
    "database_url": ("--database-url", "PostgreSQL URL (KAFKASTORE_DATABASE_URL)"),
    "topic": ("--topic", "events topic (KAFKASTORE_TOPIC)"),
    "token": (
        "--token",
        "bearer token for the HTTP API when auth is on (KAFKASTORE_TOKEN, which keeps it out of"
        " the process list)",
    ),
}
"""The settings flags, by setting; each subcommand adds those it uses."""


def _common(parser: argparse.ArgumentParser, *settings: str) -> None:
    for name in settings:
        flag, text = SETTINGS_FLAGS[name]
        parser.add_argument(flag, help=text)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _version() -> str:
    try:
        return metadata.version("kafkastore")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkastore",
        description="An event store on Apache Kafka with a PostgreSQL stream index.",
        epilog="Exit codes: "
        + ", ".join(f"{e.code} {e.name}" for e in EXIT_CODES)
        + " (docs/cli.md).",
    )
    parser.add_argument(
        "--version", action="version", version=f"kafkastore {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("dev", help="start the local stack (Kafka, PostgreSQL, API, indexer)")
    p.add_argument(
        "action",
        nargs="?",
        choices=["start", "stop", "env"],
        default="start",
        help="start (default), stop, or env: print the stack's KAFKASTORE_* exports",
    )
    p.add_argument("--detach", action="store_true", help="return once ready, leave it running")
    p.add_argument("--kafka-port", type=int, help="Kafka's port (default 9092, else a free one)")
    p.add_argument("--pg-port", type=int, help="PostgreSQL's port (default 5432, else a free one)")
    p.add_argument(
        "--api-port", type=int, help="the HTTP API's port (default 8080, else a free one)"
    )
    p.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=1,
        help="Kafka nodes: 3 runs a KRaft quorum of combined nodes, topic RF=3, "
        "min.insync.replicas=2 (free ports)",
    )
    p.add_argument(
        "--auth", action="store_true", help="require bearer tokens (prints an admin token once)"
    )
    p.add_argument(
        "--pg-standby",
        action="store_true",
        help="a synchronous streaming standby of PostgreSQL beside the primary; services use "
        "a multi-host database_url (target_session_attrs=read-write)",
    )
    _common(p)

    p = sub.add_parser("serve", help="run the HTTP API (appends and reads)")
    p.add_argument("--host", help="bind address (KAFKASTORE_HOST)")
    p.add_argument("--port", type=int, help="port (KAFKASTORE_PORT)")
    p.add_argument("--workers", type=int, default=1, help="HTTP worker processes (default 1)")
    p.add_argument("--migrate", action="store_true", help="apply migrations first")
    _common(p, "kafka", "database_url", "topic")

    p = sub.add_parser("indexer", help="run the indexer (Kafka -> PostgreSQL read index)")
    p.add_argument("--group", help="consumer group (KAFKASTORE_INDEXER_GROUP)")
    p.add_argument("--migrate", action="store_true", help="apply migrations first")
    _common(p, "kafka", "database_url", "topic")

    p = sub.add_parser("migrate", help="apply the SQL migrations")
    _common(p, "database_url")

    p = sub.add_parser("topic", help="manage the events topic")
    tsub = p.add_subparsers(dest="topic_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create (or verify) the events topic")
    c.add_argument(
        "--partitions", type=int, help="partition count, fixed for life (KAFKASTORE_PARTITIONS)"
    )
    c.add_argument(
        "--replication-factor", type=int, help="replicas (KAFKASTORE_REPLICATION_FACTOR)"
    )
    _common(c, "kafka", "topic")
    d = tsub.add_parser("describe", help="show the topic's partitions and configuration")
    _common(d, "kafka", "topic")

    p = sub.add_parser("append", help="append events to a stream")
    p.add_argument("stream_id", help="the stream to append to")
    p.add_argument("type", nargs="?", help="event type (omit to read JSON lines from stdin)")
    p.add_argument("data", nargs="?", default="{}", help="event data as JSON (default {})")
    p.add_argument("--expected-version", default="any", help='"any", "no_stream", "exists" or N')
    p.add_argument("--metadata", help="metadata as a JSON object")
    p.add_argument("--id", help="event id (UUID); generated when absent")
    _common(p, "kafka", "database_url", "topic")

    p = sub.add_parser("read", help="read a stream from the index")
    p.add_argument("stream_id", help="the stream to read")
    p.add_argument("--from-version", type=int, help="first version (default: first, or head)")
    p.add_argument("--limit", type=int, default=100, help="most events (default 100)")
    p.add_argument("--backward", action="store_true", help="newest first, from the head down")
    p.add_argument(
        "--api",
        help="base URL of the HTTP API to read through (KAFKASTORE_API_URL; default: the dev"
        " stack's API, else PostgreSQL directly)",
    )
    _common(p, "database_url", "token")

    p = sub.add_parser("tail", help="follow $all or a category live")
    p.add_argument("--category", action="append", help="only this category (repeatable)")
    p.add_argument("--type", action="append", dest="types", help="only this type (repeatable)")
    p.add_argument("--group", help="consumer group (default: a new one, from the end)")
    p.add_argument("--from-beginning", action="store_true", help="start at the topic's start")
    p.add_argument(
        "--api",
        help="base URL of the HTTP API: follow its Server-Sent Events feed instead of Kafka",
    )
    _common(p, "kafka", "database_url", "topic", "token")

    p = sub.add_parser("dlq", help="list or replay a consumer group's dead letters")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    c = dsub.add_parser("list", help="the group's dead letters in <topic>.dlq, with their errors")
    c.add_argument("group", help="the consumer group (subscription) whose dead letters to list")
    _common(c, "kafka", "database_url", "topic")
    c = dsub.add_parser("replay", help="judge each dead letter again and hand it to a handler")
    c.add_argument("group", help="the consumer group (subscription) whose dead letters to replay")
    c.add_argument(
        "--handler", help="module:function (default: the group's entry in KAFKASTORE_DLQ_HANDLERS)"
    )
    _common(c, "kafka", "database_url", "topic")

    p = sub.add_parser("audit", help="prove that markers, Kafka and the index agree")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to read the topic")
    _common(p, "kafka", "database_url", "topic")

    p = sub.add_parser("stream", help="a stream's lifecycle: metadata")
    ssub = p.add_subparsers(dest="stream_command", metavar="ACTION", required=True)
    m = ssub.add_parser("metadata", help="show a stream's metadata, or change fields of it")
    m.add_argument("stream_id", help="the stream (it need not have events)")
    m.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a field (max_count, max_age, truncate_before, acl, custom; the value is "
        "JSON, or text; empty or null unsets it); the other fields are kept (repeatable)",
    )
    _common(m, "kafka", "database_url", "topic")

    p = sub.add_parser("scavenge", help="remove events hidden by retention or deletion now")
    p.add_argument("--batch", type=int, default=1000, help="rows removed per transaction")
    _common(p, "database_url")

    _auth_parser(sub)

    p = sub.add_parser("db", help="PostgreSQL administration: the processes' database roles")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    c = dbsub.add_parser(
        "roles",
        help="create the least-privileged roles kafkastore_writer, _indexer, _api and _consumer"
        " (LOGIN, no password) and grant each exactly its privileges (idempotent; `migrate`"
        " re-grants them after an upgrade)",
    )
    _common(c, "database_url")

    p = sub.add_parser("bench", help="run the benchmarks against real services")
    p.add_argument("--quick", action="store_true", help="a ~3-minute run")
    p.add_argument("--output", help="write the JSON results here")
    p.add_argument("--only", action="append", help="run only this workload (repeatable)")
    p.add_argument(
        "--scale",
        action="store_true",
        help="the growth run: fill the store to ~5M events, measure at 0, 1M and 5M",
    )
    _common(p, "kafka", "database_url")

    p = sub.add_parser(
        "verify", help="run a fault schedule on its own 3-broker topology and check the history"
    )
    p.add_argument(
        "--long", action="store_true", help="the long schedule; report in verify/results/"
    )
    p.add_argument("--seed", type=int, help="the schedule's random seed (default: from the clock)")
    p.add_argument(
        "--output", help="write the report (long.md/short.md and .json) to this directory"
    )
    p.add_argument("--keep", action="store_true", help="keep the history and the logs afterwards")
    _common(p)
    return parser


def _auth_parser(sub: Any) -> None:
    p = sub.add_parser("auth", help="manage users and bearer tokens (docs/http.md, Security)")
    asub = p.add_subparsers(dest="auth_command", metavar="WHAT", required=True)
    u = asub.add_parser("user", help="add, list or remove users")
    usub = u.add_subparsers(dest="auth_action", metavar="ACTION", required=True)
    c = usub.add_parser("add", help="create a user")
    c.add_argument("name", help="the user's name (what ACLs name)")
    c.add_argument(
        "--role",
        action="append",
        default=[],
        choices=["admin", "ops"],
        help="a role (repeatable); none: a plain user",
    )
    _common(c, "database_url")
    _common(usub.add_parser("list", help="list users and their roles"), "database_url")
    c = usub.add_parser("remove", help="delete a user and their tokens")
    c.add_argument("name", help="the user to delete")
    _common(c, "database_url")
    t = asub.add_parser("token", help="create, list or revoke bearer tokens")
    tsub = t.add_subparsers(dest="auth_action", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a token (printed once, on stdout)")
    c.add_argument("user", help="the user the token authenticates")
    c.add_argument("--label", default="", help="a note to tell tokens apart in `token list`")
    c.add_argument(
        "--expires-in", type=_expiry, help="seconds until the token expires (at most 10 years)"
    )
    _common(c, "database_url")
    c = tsub.add_parser("list", help="list tokens (never their secrets)")
    c.add_argument("--user", help="only this user's tokens")
    _common(c, "database_url")
    c = tsub.add_parser("revoke", help="revoke a token by its id")
    c.add_argument("token_id", help="the token's id (`token list` shows it)")
    _common(c, "database_url")


def _expiry(text: str) -> float:
    """``--expires-in``: seconds, more than 0 and at most 10 years (argparse says which flag)."""
    from kafkastore.auth import MAX_EXPIRES_IN

    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds <= MAX_EXPIRES_IN:  # NaN too
        raise argparse.ArgumentTypeError(f"must be more than 0 s and at most 10 years: {text!r}")
    return seconds


def subcommands() -> set[str]:
    """Names of every subcommand (the dev stack and the --help test use it)."""
    return {name for name in subparsers(build_parser()) if " " not in name}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name (``topic create``: nested ones, space-joined)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[name] = child
                found.update({f"{name} {n}": c for n, c in subparsers(child).items()})
    return found


def target_of(args: argparse.Namespace) -> Target:
    """Where the command's settings come from: its flags, the environment, the running dev
    stack, the defaults."""
    flags = {name: getattr(args, name, None) for name in SETTINGS_FLAGS}
    flags["api_url"] = getattr(args, "api", None)
    names = {name: flag for name, (flag, _) in SETTINGS_FLAGS.items()}
    names["api_url"] = "--api"
    return resolve(flags, flag_names=names)


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of a parsed command line (see :func:`target_of`)."""
    return target_of(args).settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = _settings_announced(args)
        handler = _handler(args.command)
        return handler(args, settings)
    except KafkaStoreError as exc:
        print(f"kafkastore {args.command}: {exc.message}", file=sys.stderr)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _settings_announced(args: argparse.Namespace) -> Settings:
    if args.command in ("dev", "verify"):
        # dev chooses its own ports and reads its own dev.json; verify starts its own services.
        return Settings.from_env()
    target = target_of(args)
    # Only commands with an --api option call the HTTP API; the others (serve among them) do not.
    line = target.describe(uses_api=hasattr(args, "api"))
    if line:
        print(f"kafkastore {args.command}: {line}", file=sys.stderr)
    return target.settings


def _handler(command: str) -> Handler:
    from kafkastore import commands

    return commands.HANDLERS[command]


if __name__ == "__main__":
    sys.exit(main())
