"""Allowed origins, checked the way the websockets server checks them (its sans-I/O protocol)."""

from __future__ import annotations

import re

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidOrigin
from websockets.server import ServerProtocol

from runtime.core.browser_origins import compile_allowed_origins


def manual_allows(allowed: list | None, origin: str | None) -> bool:
    """What websockets does with `origins`: str equality, Pattern.fullmatch, None for absent."""
    if allowed is None:
        return True
    for item in allowed:
        if item == origin:
            return True
        if isinstance(item, re.Pattern) and origin is not None and item.fullmatch(origin):
            return True
    return False


def allows(values: list[str], origin: str | None) -> bool:
    allowed = compile_allowed_origins(values)
    expected = manual_allows(allowed, origin)
    protocol = ServerProtocol(origins=allowed)
    headers = Headers() if origin is None else Headers({"Origin": origin})
    try:
        protocol.process_origin(headers)
    except InvalidOrigin:
        actual = False
    else:
        actual = True
    assert actual == expected
    return actual


@pytest.mark.parametrize("values", [[], (), ["*"], ["https://a.test", "*"]])
def test_empty_or_star_allows_everything(values) -> None:
    assert compile_allowed_origins(values) is None
    assert allows(list(values), "https://anything.evil")
    assert allows(list(values), None)


def test_missing_origin_header_is_allowed() -> None:
    allowed = compile_allowed_origins(["https://app.example.com"])
    assert allowed is not None
    assert None in allowed
    assert allows(["https://app.example.com"], None)


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://app.example.com", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://app.example.com.evil.com", False),
        ("https://evil.app.example.com", False),
        ("https://example.com", False),
        ("null", False),
    ],
)
def test_exact_matching(origin: str, ok: bool) -> None:
    assert allows(["https://app.example.com"], origin) is ok


def test_exact_values_are_lowercased_as_browsers_send_them() -> None:
    assert allows(["HTTPS://App.Example.COM"], "https://app.example.com")


def test_exact_with_port() -> None:
    assert allows(["http://localhost:3000"], "http://localhost:3000")
    assert not allows(["http://localhost:3000"], "http://localhost:3001")
    assert not allows(["http://localhost:3000"], "http://localhost")


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://a.example.com", True),
        ("https://a.b.example.com", True),
        ("https://my-app.example.com", True),
        ("https://A.Example.com", True),
        ("https://example.com", False),
        ("https://.example.com", False),
        ("https://evil-example.com", False),
        ("https://a.evil-example.com", False),
        ("https://aexample.com", False),
        ("https://a.example.com.evil.com", False),
        ("https://a.example.community", False),
        ("http://a.example.com", False),
        ("https://a.example.com:8443", False),
        ("https://a_b.example.com", False),
        ("https://a/b.example.com", False),
    ],
)
def test_wildcard_matching(origin: str, ok: bool) -> None:
    assert allows(["https://*.example.com"], origin) is ok


def test_wildcard_with_port_and_several_values() -> None:
    values = ["https://*.example.com:8443", "http://localhost:3000"]
    assert allows(values, "https://a.example.com:8443")
    assert not allows(values, "https://a.example.com")
    assert allows(values, "http://localhost:3000")
    assert not allows(values, "https://evil.test")


def test_wildcard_dots_are_literal() -> None:
    assert not allows(["https://*.example.com"], "https://a.exampleXcom")


@pytest.mark.parametrize(
    "value",
    [
        "example.com",
        "https://",
        "https://example.com/",
        "https://example.com/path",
        "https://example.com?x=1",
        "https://exa mple.com",
        "1https://example.com",
        "https://*",
        "https://a.*.example.com",
        "https://*example.com",
        "https://*.*.example.com",
        "https://*.example.*",
        "*.example.com",
    ],
)
def test_invalid_values_raise(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        compile_allowed_origins([value])
