"""The ``kafkastore`` command line: thin subcommands over the same functions the tests call.

Configuration comes from flags or ``KAFKASTORE_*`` variables (see :mod:`kafkastore.config`).
Our errors are printed as one line and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError

Handler = Callable[[argparse.Namespace, Settings], int]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka", help="Kafka bootstrap servers (KAFKASTORE_KAFKA)")
    parser.add_argument("--database-url", help="PostgreSQL URL (KAFKASTORE_DATABASE_URL)")
    parser.add_argument("--topic", help="events topic (KAFKASTORE_TOPIC)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkastore",
        description="An event store on Apache Kafka with a PostgreSQL stream index.",
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
    p.add_argument("--kafka-port", type=int)
    p.add_argument("--pg-port", type=int)
    p.add_argument("--api-port", type=int)
    p.add_argument(
        "--auth", action="store_true", help="require bearer tokens (prints an admin token once)"
    )
    _common(p)

    p = sub.add_parser("serve", help="run the HTTP API (appends and reads)")
    p.add_argument("--host", help="bind address (KAFKASTORE_HOST)")
    p.add_argument("--port", type=int, help="port (KAFKASTORE_PORT)")
    p.add_argument("--workers", type=int, default=1, help="HTTP worker processes")
    p.add_argument("--migrate", action="store_true", help="apply migrations first")
    _common(p)

    p = sub.add_parser("indexer", help="run the indexer (Kafka -> PostgreSQL read index)")
    p.add_argument("--group", help="consumer group (KAFKASTORE_INDEXER_GROUP)")
    p.add_argument("--migrate", action="store_true", help="apply migrations first")
    _common(p)

    p = sub.add_parser("migrate", help="apply the SQL migrations")
    _common(p)

    p = sub.add_parser("topic", help="manage the events topic")
    tsub = p.add_subparsers(dest="topic_command", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create (or verify) the events topic")
    c.add_argument("--partitions", type=int, help="partition count (fixed for life)")
    c.add_argument("--replication-factor", type=int)
    _common(c)
    d = tsub.add_parser("describe", help="show the topic's partitions and configuration")
    _common(d)

    p = sub.add_parser("append", help="append events to a stream")
    p.add_argument("stream_id")
    p.add_argument("type", nargs="?", help="event type (omit to read JSON lines from stdin)")
    p.add_argument("data", nargs="?", default="{}", help="event data as JSON")
    p.add_argument("--expected-version", default="any", help='"any", "no_stream", "exists" or N')
    p.add_argument("--metadata", help="metadata as a JSON object")
    p.add_argument("--id", help="event id (UUID); generated when absent")
    _common(p)

    p = sub.add_parser("read", help="read a stream from the index")
    p.add_argument("stream_id")
    p.add_argument("--from-version", type=int)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--backward", action="store_true")
    p.add_argument("--api", help="base URL of the HTTP API (default: direct PostgreSQL)")
    _common(p)

    p = sub.add_parser("tail", help="follow $all or a category live")
    p.add_argument("--category", action="append", help="only this category (repeatable)")
    p.add_argument("--type", action="append", dest="types", help="only this type (repeatable)")
    p.add_argument("--group", help="consumer group (default: a new one, from the end)")
    p.add_argument("--from-beginning", action="store_true")
    _common(p)

    p = sub.add_parser("audit", help="prove that markers, Kafka and the index agree")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to read the topic")
    _common(p)

    _auth_parser(sub)

    p = sub.add_parser("bench", help="run the benchmarks against real services")
    p.add_argument("--quick", action="store_true", help="a ~3-minute run")
    p.add_argument("--output", help="write the JSON results here")
    p.add_argument("--only", action="append", help="run only this workload (repeatable)")
    _common(p)
    return parser


def _auth_parser(sub: Any) -> None:
    p = sub.add_parser("auth", help="manage users and bearer tokens (API.md Security)")
    asub = p.add_subparsers(dest="auth_command", metavar="WHAT", required=True)
    u = asub.add_parser("user", help="add, list or remove users")
    usub = u.add_subparsers(dest="auth_action", metavar="ACTION", required=True)
    c = usub.add_parser("add", help="create a user")
    c.add_argument("name")
    c.add_argument("--role", action="append", default=[], choices=["admin", "ops"])
    _common(c)
    _common(usub.add_parser("list", help="list users and their roles"))
    c = usub.add_parser("remove", help="delete a user and their tokens")
    c.add_argument("name")
    _common(c)
    t = asub.add_parser("token", help="create, list or revoke bearer tokens")
    tsub = t.add_subparsers(dest="auth_action", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a token (printed once, on stdout)")
    c.add_argument("user")
    c.add_argument("--label", default="")
    c.add_argument("--expires-in", type=float, help="seconds until the token expires")
    _common(c)
    c = tsub.add_parser("list", help="list tokens (never their secrets)")
    c.add_argument("--user")
    _common(c)
    c = tsub.add_parser("revoke", help="revoke a token by its id")
    c.add_argument("token_id")
    _common(c)


def subcommands() -> set[str]:
    """Names of every subcommand (the dev stack and the --help test use it)."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(
        kafka=getattr(args, "kafka", None),
        database_url=getattr(args, "database_url", None),
        topic=getattr(args, "topic", None),
        **extra,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = settings_from(args)
        handler = _handler(args.command)
        return handler(args, settings)
    except KafkaStoreError as exc:
        print(f"kafkastore {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _handler(command: str) -> Handler:
    from kafkastore import commands

    return commands.HANDLERS[command]


if __name__ == "__main__":
    sys.exit(main())
