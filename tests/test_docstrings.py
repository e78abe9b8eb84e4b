"""Every public method of the client and the subscription API says what it does."""

from __future__ import annotations

import inspect

import pytest

from consumers.aio import AsyncSubscription
from consumers.subscription import RetryPolicy, Subscription
from indexer.reads import AsyncReads, Reads
from kafkastore.client import AsyncEventStore, EventStore

PUBLIC_API = [EventStore, AsyncEventStore, Reads, AsyncReads, Subscription, AsyncSubscription]


def undocumented(cls: type) -> list[str]:
    missing = [] if inspect.getdoc(cls) else [cls.__name__]
    for name in dir(cls):  # inherited methods too (``connect`` lives in a shared base)
        member = inspect.getattr_static(cls, name)
        if name.startswith("_") or hasattr(object, name):
            continue
        function = member.fget if isinstance(member, property) else member
        function = getattr(function, "__func__", function)
        if callable(function) and not (function.__doc__ or "").strip():
            missing.append(f"{cls.__name__}.{name}")
    return missing


@pytest.mark.parametrize("cls", PUBLIC_API, ids=lambda c: c.__name__)
def test_every_public_method_has_a_docstring(cls: type) -> None:
    assert undocumented(cls) == []


def test_the_check_finds_an_undocumented_method() -> None:
    class Example:
        """Documented."""

        def documented(self) -> None:
            """Yes."""

        def bare(self) -> None:
            pass

    assert undocumented(Example) == ["Example.bare"]
    assert undocumented(RetryPolicy) == []
