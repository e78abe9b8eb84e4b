"""docs/ is the project's own reference, kept true: every route of the HTTP app, every setting
and every subcommand and option of the CLI is in it, and nothing cites files that do not ship."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from dev import docs
from kafkastore.cli import build_parser, subparsers
from kafkastore.config import ENV_PREFIX, Settings
from kafkastore.exitcodes import EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = ["http.md", "python.md", "cli.md", "configuration.md", "design.md"]


def _text(name: str) -> str:
    return (DOCS / name).read_text()


def test_every_reference_page_exists_and_the_readme_links_each() -> None:
    readme = (ROOT / "README.md").read_text()

    assert [name for name in REFERENCE if not (DOCS / name).is_file()] == []
    assert [name for name in REFERENCE if f"(docs/{name}" not in readme] == []


def test_every_route_of_the_http_app_is_in_docs_http_md() -> None:
    from kafkastore.http import create_app

    app = create_app(Settings.from_env({}))
    routes = [
        f"`{method.upper()} {path}`"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    routes += ["`GET /openapi.json`", "`GET /docs`"]
    text = _text("http.md")

    assert len(routes) >= 8
    assert [route for route in routes if route not in text] == []


def test_every_setting_is_in_docs_configuration_md_with_its_default() -> None:
    text = _text("configuration.md")

    missing = [
        ENV_PREFIX + name.upper()
        for name in Settings.__dataclass_fields__
        if f"`{ENV_PREFIX}{name.upper()}`" not in text
    ]

    assert missing == []
    assert f"| `{ENV_PREFIX}KAFKA` | `{Settings().kafka}` |" in text


def test_the_generated_settings_table_is_current() -> None:
    text = _text("configuration.md")

    assert docs.render(text) == text, "docs/configuration.md is stale: run python -m dev.docs"


def _sections(text: str) -> dict[str, str]:
    """The text under each ``### `kafkastore …` `` / ``#### …`` heading, by command."""
    found: dict[str, str] = {}
    parts = re.split(r"^#{3,4} `kafkastore ([a-z ]+)`\s*$", text, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = re.split(r"^#{1,4} ", body, flags=re.M)[0]
    return found


def test_every_subcommand_and_option_is_in_docs_cli_md() -> None:
    sections = _sections(_text("cli.md"))
    missing: list[str] = []
    for name, parser in subparsers(build_parser()).items():
        if name not in sections:
            missing.append(name)
            continue
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.dest == "verbose":
                continue  # documented once, for every subcommand
            if not action.option_strings and action.choices:
                # A positional with choices (dev start|stop|env): each choice is documented.
                missing += [f"{name} {c}" for c in action.choices if f"`{c}`" not in sections[name]]
                continue
            words = action.option_strings or [action.dest]
            if not any(f"`{w}" in sections[name] for w in words):
                missing.append(f"{name} {words[-1]}")

    assert missing == []


def test_every_exit_code_is_in_docs_cli_md() -> None:
    text = _text("cli.md")

    assert [e.code for e in EXIT_CODES if f"| {e.code} | {e.name} | {e.meaning}" not in text] == []


def test_nothing_cites_documents_that_do_not_ship() -> None:
    cited = re.compile(r"\b(API|DESIGN)\.md\b")
    files = [ROOT / "README.md", *DOCS.glob("*.md")]
    packages = ("kafkastore", "writer", "indexer", "consumers", "dev", "bench", "verify", "tests")
    for package in packages:
        files += (ROOT / package).rglob("*.py")
    this = Path(__file__).resolve()

    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        if path.resolve() != this
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if cited.search(line)
    ]

    assert offenders == []


def test_links_between_the_docs_point_at_files_that_exist() -> None:
    link = re.compile(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)")
    broken = []
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in link.findall(page.read_text()):
            if not (page.parent / target).is_file():
                broken.append(f"{page.name} -> {target}")

    assert broken == []
