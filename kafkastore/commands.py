"""Implementations of the CLI subcommands (composition: the only CLI module importing roles).

Arguments become typed options here, at the edge (``AppendOptions``, ``ReadOptions``,
``TailOptions``, ``BenchOptions``); the roles never see an ``argparse.Namespace``. This is the
one kernel module that imports ``dev``, ``bench`` and ``verify``, to run ``kafkastore dev``,
``kafkastore bench`` and ``kafkastore verify``; none imports it back.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from kafkastore.config import Settings
from kafkastore.manifest import FILE_NAME, Manifest, dev_home

console = Console(stderr=True)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "env":
        return _print_dev_env(dev_home() / FILE_NAME)
    from dev import command

    if args.action == "stop":
        return command.stop()
    return command.run(
        detach=args.detach,
        kafka_port=args.kafka_port,
        pg_port=args.pg_port,
        api_port=args.api_port,
        brokers=args.brokers,
        auth=args.auth,
        pg_standby=args.pg_standby,
    )


def _print_dev_env(path: Path) -> int:
    """``eval "$(kafkastore dev env)"`` points a shell at the running dev stack."""
    manifest = Manifest.load(path)
    if manifest is None:
        console.print(f"no dev stack: {path} is missing (start one with `kafkastore dev`)")
        return 1
    for name, value in manifest.exports().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from kafkastore import schema

    applied = schema.migrate(settings.database_url)
    version = schema.current_version(settings.database_url)
    if applied:
        for name in applied:
            console.print(f"applied {name}")
    console.print(f"schema at version {version}")
    return 0


def cmd_topic(args: argparse.Namespace, settings: Settings) -> int:
    from kafkastore import topic

    if args.topic_command == "describe":
        info = topic.describe_topic(settings)
        if info is None:
            console.print(f"topic {settings.topic!r} does not exist")
            return 1
    else:
        if args.replication_factor:
            settings = settings.replace(replication_factor=args.replication_factor)
        info = topic.ensure_topic(settings, partitions=args.partitions)
        verb = "created" if info.created else "verified"
        console.print(f"{verb} topic {info.name!r}: {info.partitions} partitions")
    print(
        json.dumps(
            {
                "topic": info.name,
                "partitions": info.partitions,
                "replication_factor": info.replication_factor,
                "config": {k: info.config.get(k) for k in sorted(topic.topic_config(1))},
            },
            indent=2,
        )
    )
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from kafkastore import http

    settings = settings.replace(host=args.host or settings.host, port=args.port or settings.port)
    if args.migrate:
        cmd_migrate(args, settings)
    return http.serve(settings, workers=args.workers)


def cmd_indexer(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import service

    if args.group:
        settings = settings.replace(indexer_group=args.group)
    if args.migrate:
        cmd_migrate(args, settings)
    return service.run(settings)


def cmd_append(args: argparse.Namespace, settings: Settings) -> int:
    from writer import cli as writer_cli

    options = writer_cli.AppendOptions(
        stream_id=args.stream_id,
        type=args.type,
        data=args.data,
        expected_version=args.expected_version,
        metadata=args.metadata,
        id=args.id,
    )
    return writer_cli.append(options, settings, stdin=sys.stdin, out=sys.stdout)


def cmd_read(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import cli as indexer_cli

    options = indexer_cli.ReadOptions(
        stream_id=args.stream_id,
        from_version=args.from_version,
        limit=args.limit,
        backward=args.backward,
        # --api, else KAFKASTORE_API_URL, else the running dev stack's API (kafkastore.target).
        api=settings.api_url or None,
        token=settings.token,
    )
    return indexer_cli.read(options, settings, out=sys.stdout)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from consumers import tail

    if args.api:
        from consumers import sse_tail

        return sse_tail.run(
            args.api,
            sys.stdout,
            categories=_tuple(args.category),
            types=_tuple(args.types),
            from_beginning=args.from_beginning,
            token=settings.token,
        )

    options = tail.TailOptions(
        group=args.group,
        from_beginning=args.from_beginning,
        categories=_tuple(args.category),
        types=_tuple(args.types),
    )
    return tail.run(options, settings, out=sys.stdout)


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from consumers import groups, replay

    if args.dlq_command == "list":
        for letter in groups.dead_letters(settings, args.group):
            print(orjson.dumps(letter.json()).decode())
        return 0
    handler = (
        replay.resolve_handler(args.handler)
        if args.handler
        else replay.handler_of(settings, args.group)
    )
    results = replay.replay(settings, args.group, handler)
    for result in results:
        print(orjson.dumps(result.json()).decode())
    return 0 if all(r.outcome in replay.SETTLED for r in results) else 1


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import audit

    return audit.run(settings, timeout=args.timeout, out=sys.stdout)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench import main as bench_main
    from bench.options import BenchOptions

    options = BenchOptions(
        quick=args.quick,
        output=Path(args.output) if args.output else None,
        only=tuple(args.only or ()),
        scale=args.scale,
        services_given=bool(args.kafka and args.database_url),
    )
    return bench_main.run(options, settings)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """``kafkastore verify``: its own topology (``settings`` are not used: the run starts the
    services it faults), a schedule, the checker's verdict and a report."""
    del settings
    from verify import main as verify_main

    return verify_main.run(
        verify_main.VerifyOptions(
            long=args.long,
            seed=args.seed,
            output=Path(args.output) if args.output else None,
            keep=args.keep,
        )
    )


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    """``kafkastore stream metadata STREAM [--set key=value ...]``: print the metadata (JSON);
    with ``--set``, change those fields, keeping the others, checked against the metadata
    version just read (a concurrent change makes it fail rather than be overwritten)."""
    from kafkastore.client import EventStore
    from kafkastore.errors import InvalidRequest

    changes: dict[str, object] = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--set wants KEY=VALUE, got {item!r}", fields=["set"])
        changes[key] = _value(text)
    store = EventStore(settings)
    try:
        metadata = store.get_metadata(args.stream_id)
        if changes:
            fields = {**metadata.to_json(), **changes}
            del fields["stream_id"], fields["metadata_version"]
            metadata = store.set_metadata(
                args.stream_id, expected_metadata_version=metadata.metadata_version, **fields
            )
    finally:
        store.close()
    print(json.dumps(metadata.to_json(), indent=2))
    return 0


def _value(text: str) -> object:
    """A ``--set`` value: JSON when it parses, else the text itself; empty means unset."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_scavenge(args: argparse.Namespace, settings: Settings) -> int:
    from indexer import scavenge

    return scavenge.run(settings, batch=args.batch, out=sys.stdout)


def cmd_auth(args: argparse.Namespace, settings: Settings) -> int:
    """``kafkastore auth user|token ...``: tokens go to stdout once, the rest as JSON lines."""
    from kafkastore import authstore

    url = settings.database_url
    what, action = args.auth_command, args.auth_action
    if what == "user" and action == "add":
        print(json.dumps(authstore.add_user(url, args.name, tuple(args.role)).to_json()))
    elif what == "user" and action == "list":
        for user in authstore.list_users(url):
            print(json.dumps(user.to_json()))
    elif what == "user":
        authstore.remove_user(url, args.name)
        console.print(f"removed user {args.name!r} and their tokens")
    elif action == "create":
        info, token = authstore.create_token(
            url, args.user, label=args.label, expires_in=args.expires_in
        )
        console.print(f"token {info.id} for {info.user!r} (shown once; store it now):")
        print(token)
    elif action == "list":
        for token_info in authstore.list_tokens(url, args.user):
            print(json.dumps(token_info.to_json()))
    else:
        authstore.revoke_token(url, args.token_id)
        console.print(f"revoked token {args.token_id}")
    return 0


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    """A repeatable option: None when never given."""
    return tuple(values) if values is not None else None


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    """``kafkastore db roles``: the least-privileged roles of the store's processes."""
    from kafkastore import dbroles

    created = dbroles.create_roles(settings.database_url)
    for role, grants in dbroles.PRIVILEGES.items():
        state = "created" if role in created else "exists"
        tables = ", ".join(f"{t} ({p})" for t, p in grants.items())
        print(f"{role} [{state}]: {tables}")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "dev": cmd_dev,
    "migrate": cmd_migrate,
    "topic": cmd_topic,
    "serve": cmd_serve,
    "indexer": cmd_indexer,
    "append": cmd_append,
    "read": cmd_read,
    "tail": cmd_tail,
    "dlq": cmd_dlq,
    "audit": cmd_audit,
    "bench": cmd_bench,
    "verify": cmd_verify,
    "stream": cmd_stream,
    "scavenge": cmd_scavenge,
    "auth": cmd_auth,
    "db": cmd_db,
}
