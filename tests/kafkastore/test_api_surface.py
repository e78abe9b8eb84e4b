"""The public surface: the facade's exports and the HTTP error table."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import orjson

import kafkastore
from kafkastore import errors
from kafkastore.http import error_response, status_of


def _public_names_of_the_facade() -> set[str]:
    """Every public name the package root binds at module level: its imports from the package
    (also those under ``if TYPE_CHECKING``, which ``__getattr__`` serves lazily), its classes,
    functions and assignments."""
    tree = ast.parse(Path(kafkastore.__file__).read_text(encoding="utf-8"))
    body = list(tree.body)
    body += [inner for node in tree.body if isinstance(node, ast.If) for inner in node.body]
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kafkastore"):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def test_the_package_exports_exactly_its_public_names() -> None:
    assert len(kafkastore.__all__) == len(set(kafkastore.__all__))
    assert set(kafkastore.__all__) == _public_names_of_the_facade()
    for name in kafkastore.__all__:
        assert getattr(kafkastore, name) is not None
    assert kafkastore.EventStore.__module__ == "kafkastore.client"


def test_the_errors_module_exports_every_error_it_defines() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and value.__module__ == errors.__name__
        and not name.startswith("_")
        and issubclass(value, BaseException)
    }

    assert set(errors.__all__) == defined


def test_every_error_has_one_root_and_is_exported() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.KafkaStoreError)
        assert getattr(kafkastore, name) is cls


def test_errors_map_to_the_statuses_of_the_api_contract() -> None:
    cases = {
        errors.InvalidRequest("x"): 400,
        errors.UnsupportedMediaType("text/plain"): 415,
        errors.StreamNotFound("s"): 404,
        errors.WrongExpectedVersion("s", 1, 2): 409,
        errors.AppendConflicts([errors.WrongExpectedVersion("s", 1, 2)]): 409,
        errors.DuplicateEventId(["a"]): 409,
        errors.StreamDeleted("s"): 410,
        errors.PayloadTooLarge("x", limit="max_event_bytes", maximum=1, actual=2): 413,
        errors.Unavailable("x"): 503,
        errors.OutcomeUnknown("x"): 503,
    }
    assert {type(e).__name__: status_of(e) for e in cases} == {
        type(e).__name__: s for e, s in cases.items()
    }


def test_unavailable_answers_with_retry_after_and_says_when_the_outcome_is_unknown() -> None:
    plain = error_response(errors.Unavailable("busy", retry_after=2.0))
    unknown = error_response(errors.OutcomeUnknown("lost"))
    assert plain.headers["Retry-After"] == "2"
    assert orjson.loads(plain.body) == {"error": "unavailable", "message": "busy"}
    assert orjson.loads(unknown.body) == {
        "error": "unavailable",
        "message": "lost",
        "outcome": "unknown",
    }
    assert errors.OutcomeUnknown("x").retriable and errors.OutcomeUnknown("x").outcome_unknown
