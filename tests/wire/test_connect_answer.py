"""A $connect handler's answer read as API Gateway reads a Lambda proxy result; its headers
checked before they can reach a handshake response."""

from __future__ import annotations

import base64
import json

import pytest

from runtime.transports.base import ConnectAnswer
from runtime.wire.connect_answer import (
    MAX_BODY_BYTES,
    MAX_HEADERS,
    MAX_HEADERS_BYTES,
    UnsafeHeader,
    cut_text,
    parse_lambda_answer,
    printable_text,
    read_lambda_answer,
    safe_headers,
)


def answer(document: object) -> ConnectAnswer:
    return parse_lambda_answer(json.dumps(document).encode())


# --- status -------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [None, {}, {"body": "welcome"}, {"statusCode": None}])
def test_no_status_code_accepts(document: object) -> None:
    assert answer(document).status == 200


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, 200), (204, 204), (401, 401), (599, 599), (100, 100), ("403", 403), ("200", 200)],
)
def test_status_code_decides(status: object, expected: int) -> None:
    assert answer({"statusCode": status}).status == expected


@pytest.mark.parametrize(
    "status",
    [
        99,
        600,
        0,
        -200,
        1000,
        True,
        200.0,
        "abc",
        "20",
        "2000",
        " 200",
        "\uff12\uff10\uff10",
        [200],
        {},
    ],
)
def test_bad_status_code_is_refused(status: object) -> None:
    with pytest.raises(ValueError, match="statusCode must be an HTTP status from 100 to 599"):
        answer({"statusCode": status})


@pytest.mark.parametrize(
    "payload", [b"", b"not json", b"{", b'{"statusCode": 200', b"\xff\xfe", b"[" * 100_000]
)
def test_payload_that_is_not_json_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="answer is not JSON"):
        parse_lambda_answer(payload)


@pytest.mark.parametrize("document", [[], [{"statusCode": 200}], "ok", 200, True])
def test_payload_that_is_not_an_object_is_refused(document: object) -> None:
    with pytest.raises(ValueError, match="answer must be a JSON object or null"):
        answer(document)


def test_read_lambda_answer_takes_a_decoded_result() -> None:
    assert read_lambda_answer({"statusCode": 403, "body": "no"}) == ConnectAnswer(403, (), "no")
    assert read_lambda_answer(None) == ConnectAnswer(200)


# --- headers ------------------------------------------------------------------------------------


def test_headers_and_multi_value_headers_are_merged() -> None:
    result = answer(
        {
            "statusCode": 200,
            "headers": {"Sec-WebSocket-Protocol": "chat", "X-One": "1", "Set-Cookie": "a=1"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "x-one": ["1"]},
        }
    )
    assert result.headers == (
        ("Sec-WebSocket-Protocol", "chat"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("x-one", "1"),
    )


def test_headers_the_handshake_owns_are_dropped() -> None:
    owned = [
        "Connection",
        "upgrade",
        "SEC-WEBSOCKET-ACCEPT",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Version",
        "Content-Length",
        "transfer-encoding",
        "Server",
        "Date",
    ]
    headers = {name: "x" for name in owned} | {"X-Kept": "yes"}
    assert answer({"statusCode": 200, "headers": headers}).headers == (("X-Kept", "yes"),)


@pytest.mark.parametrize(
    "document",
    [
        {"headers": []},
        {"headers": "X-A: 1"},
        {"headers": {"X-A": 1}},
        {"headers": {"X-A": None}},
        {"headers": {"X-A": ["1"]}},
        {"multiValueHeaders": {"X-A": "1"}},
        {"multiValueHeaders": {"X-A": [1]}},
        {"multiValueHeaders": [["X-A", "1"]]},
    ],
)
def test_headers_of_the_wrong_shape_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="eaders must be an object of"):
        answer(document)


@pytest.mark.parametrize(
    "value",
    [
        "a\r\nSet-Cookie: evil=1",
        "a\nX-Evil: 1",
        "a\rb",
        "a\x00b",
        "a\x7fb",
        "a\x1bb",
        "line\u2028separator",
        "snow ☃",
    ],
)
def test_header_value_http_cannot_carry_is_unsafe(value: str) -> None:
    with pytest.raises(UnsafeHeader, match="has a value HTTP cannot carry"):
        answer({"headers": {"X-Note": value}})
    with pytest.raises(UnsafeHeader):
        answer({"multiValueHeaders": {"X-Note": ["fine", value]}})


@pytest.mark.parametrize("name", ["", "Bad Name", "X:Y", "X\r\nY", "Ünicode", "(x)", "a/b"])
def test_header_name_that_is_not_a_token_is_unsafe(name: str) -> None:
    with pytest.raises(UnsafeHeader, match="is not an HTTP token"):
        answer({"headers": {name: "1"}})


def test_unsafe_owned_header_is_refused_rather_than_dropped() -> None:
    with pytest.raises(UnsafeHeader):
        answer({"headers": {"Connection": "close\r\nX-Evil: 1"}})


def test_tabs_and_latin1_values_are_kept() -> None:
    pairs = (("X-Note", "a\tb"), ("X-Name", "café"), ("Sec-WebSocket-Protocol", "graphql-ws"))
    assert safe_headers(pairs) == pairs


def test_non_string_header_is_unsafe() -> None:
    with pytest.raises(UnsafeHeader, match="not a string"):
        safe_headers([("X-A", 1)])  # type: ignore[list-item]
    with pytest.raises(UnsafeHeader, match="not an HTTP token"):
        safe_headers([(1, "x")])  # type: ignore[list-item]


def test_at_most_32_headers() -> None:
    headers = [(f"X-H{i}", "v") for i in range(MAX_HEADERS)]
    assert len(safe_headers(headers)) == MAX_HEADERS
    with pytest.raises(UnsafeHeader, match="more than 32 headers"):
        safe_headers([*headers, ("X-Last", "v")])
    # Dropped headers do not count.
    assert len(safe_headers([*headers, ("Date", "today")])) == MAX_HEADERS


def test_at_most_8_kib_of_headers() -> None:
    value = "v" * (MAX_HEADERS_BYTES - len("X-Big") - 4)
    assert safe_headers([("X-Big", value)]) == (("X-Big", value),)
    with pytest.raises(UnsafeHeader, match="larger than 8192 bytes"):
        safe_headers([("X-Big", value + "v")])
    with pytest.raises(UnsafeHeader, match="larger than 8192 bytes"):
        safe_headers([("X-A", value[:5000]), ("X-B", value[:5000])])


def test_unsafe_header_is_a_value_error() -> None:
    """Callers that only catch ValueError still refuse."""
    assert issubclass(UnsafeHeader, ValueError)


# --- body ---------------------------------------------------------------------------------------


def test_body_is_kept_as_text() -> None:
    assert answer({"statusCode": 401, "body": "no entry\nhere"}).body == "no entry\nhere"


def test_body_is_cut_to_one_kib_between_characters() -> None:
    assert len(answer({"body": "x" * 5000}).body) == MAX_BODY_BYTES
    cut = answer({"body": "é" * 1000}).body  # two bytes each: 512 fit
    assert cut == "é" * 512
    cut = answer({"body": "x" + "☃" * 1000}).body  # three bytes each after one
    assert cut == "x" + "☃" * 341
    assert len(cut.encode()) <= MAX_BODY_BYTES


def test_body_with_a_lone_surrogate_stays_encodable() -> None:
    body = parse_lambda_answer(b'{"statusCode": 403, "body": "a\\ud800b"}').body
    assert body.encode("utf-8") == b"a?b"


def test_base64_body_is_decoded() -> None:
    encoded = base64.b64encode("refusé".encode()).decode()
    assert answer({"statusCode": 403, "body": encoded, "isBase64Encoded": True}).body == "refusé"


def test_bad_base64_body_is_refused() -> None:
    with pytest.raises(ValueError, match="not base64"):
        answer({"statusCode": 403, "body": "%%%", "isBase64Encoded": True})


@pytest.mark.parametrize("body", [1, {"text": "no"}, ["no"], True])
def test_body_that_is_not_a_string_is_refused(body: object) -> None:
    with pytest.raises(ValueError, match="body must be a string"):
        answer({"statusCode": 403, "body": body})


def test_cut_text_replaces_invalid_utf8() -> None:
    assert cut_text(b"ok\xffok") == "ok\ufffdok"
    assert cut_text(b"") == ""


def test_printable_text_cannot_break_a_line() -> None:
    assert (
        printable_text(b"denied\r\n\tby\x00policy\x1b[31m") == "denied   by\ufffdpolicy\ufffd[31m"
    )
    assert printable_text(b"plain") == "plain"
    assert len(printable_text(b"y" * 4000).encode()) == MAX_BODY_BYTES
