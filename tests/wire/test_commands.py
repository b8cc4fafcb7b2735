"""Commands from the origin: whole-body errors, per-command rejections, and the encoding back."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from runtime.wire.commands import (
    MAX_COMMANDS_PER_BODY,
    Broadcast,
    Close,
    CommandBodyError,
    CommandError,
    Publish,
    Rejection,
    Send,
    encode_commands,
    parse_body,
    parse_command,
)

LIMIT = 1024


def body(*commands: Any) -> bytes:
    return json.dumps({"commands": list(commands)}).encode()


def parse(*commands: Any, limit: int = LIMIT):
    return parse_body(body(*commands), max_payload_bytes=limit)


def rejection_of(command: Any, limit: int = LIMIT) -> Rejection:
    commands, rejections = parse(command, limit=limit)
    assert commands == []
    assert len(rejections) == 1
    return rejections[0]


# Valid bodies --------------------------------------------------------------------------------


def test_parses_send_close_and_broadcast() -> None:
    commands, rejections = parse(
        {"action": "send", "connectionIds": ["a", "b"], "data": "hi", "isBase64Encoded": False},
        {"action": "close", "connectionIds": ["c"], "code": 4000, "reason": "bye"},
        {"action": "broadcast", "data": "all"},
    )
    assert rejections == []
    assert commands == [
        Send(("a", "b"), b"hi", False),
        Close(("c",), 4000, "bye"),
        Broadcast(b"all", False),
    ]
    assert [command.action for command in commands] == ["send", "close", "broadcast"]


def test_accepts_str_and_bytes_bodies() -> None:
    text = '{"commands": [{"action": "broadcast", "data": "x"}]}'
    assert parse_body(text, max_payload_bytes=LIMIT) == ([Broadcast(b"x", False)], [])
    assert parse_body(text.encode(), max_payload_bytes=LIMIT) == ([Broadcast(b"x", False)], [])


def test_empty_command_list() -> None:
    assert parse_body(b'{"commands": []}', max_payload_bytes=LIMIT) == ([], [])


def test_close_defaults() -> None:
    commands, _ = parse({"action": "close", "connectionIds": ["a"]})
    assert commands == [Close(("a",), 1000, "")]


def test_text_data_is_utf8() -> None:
    commands, _ = parse({"action": "send", "connectionIds": ["a"], "data": "é 😀"})
    assert commands == [Send(("a",), "é 😀".encode(), False)]


def test_base64_data_is_decoded() -> None:
    raw = bytes(range(256))
    commands, rejections = parse(
        {
            "action": "send",
            "connectionIds": ["a"],
            "data": base64.b64encode(raw).decode(),
            "isBase64Encoded": True,
        },
        {
            "action": "broadcast",
            "data": base64.b64encode(b"\x00\xff").decode(),
            "isBase64Encoded": True,
        },
    )
    assert rejections == []
    assert commands == [Send(("a",), raw, True), Broadcast(b"\x00\xff", True)]


def test_duplicate_ids_collapse_keeping_first_order() -> None:
    commands, _ = parse(
        {"action": "send", "connectionIds": ["b", "a", "b", "c", "a"], "data": "x"},
        {"action": "close", "connectionIds": ["z", "z"]},
    )
    assert commands[0].connection_ids == ("b", "a", "c")
    assert commands[1].connection_ids == ("z",)


# Whole-body errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"not json", "not valid JSON"),
        (b'{"commands": [', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'"commands"', "must be a JSON object"),
        (b"{}", "must be a JSON object"),
        (b'{"command": []}', "must be a JSON object"),
        (b'{"commands": {}}', '"commands" must be a list \\(got dict\\)'),
        (b'{"commands": null}', '"commands" must be a list \\(got null\\)'),
        (b'{"commands": "send"}', '"commands" must be a list \\(got str\\)'),
    ],
)
def test_unusable_bodies_raise_command_body_error(raw: bytes, message: str) -> None:
    with pytest.raises(CommandBodyError, match=message):
        parse_body(raw, max_payload_bytes=LIMIT)


def test_too_many_commands() -> None:
    raw = body(*([{"action": "broadcast", "data": ""}] * (MAX_COMMANDS_PER_BODY + 1)))
    with pytest.raises(CommandBodyError, match=f"at most {MAX_COMMANDS_PER_BODY}"):
        parse_body(raw, max_payload_bytes=LIMIT)
    commands, _ = parse_body(
        body(*([{"action": "broadcast", "data": ""}] * MAX_COMMANDS_PER_BODY)),
        max_payload_bytes=LIMIT,
    )
    assert len(commands) == MAX_COMMANDS_PER_BODY


def test_deeply_nested_body_is_a_body_error() -> None:
    raw = '{"commands": [' + "[" * 5_000 + "]" * 5_000 + "]}"
    with pytest.raises(CommandBodyError):
        parse_body(raw, max_payload_bytes=LIMIT)


# Per-command errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ("send", "a command must be an object \\(got str\\)"),
        (None, "a command must be an object \\(got null\\)"),
        ([1], "a command must be an object \\(got list\\)"),
        ({}, '"action" must be one of send, close, broadcast, publish, subscribe, unsubscribe'),
        (
            {"action": "SEND"},
            '"action" must be one of send, close, broadcast, publish, subscribe, unsubscribe '
            "\\(got 'SEND'\\)",
        ),
        (
            {"action": "send", "data": "x"},
            '"connectionIds" must be a non-empty list \\(got null\\)',
        ),
        (
            {"action": "send", "connectionIds": [], "data": "x"},
            '"connectionIds" must be a non-empty',
        ),
        ({"action": "send", "connectionIds": "a", "data": "x"}, '"connectionIds".*\\(got str\\)'),
        ({"action": "send", "connectionIds": ["a", 5], "data": "x"}, '"connectionIds"\\[1\\]'),
        ({"action": "close", "connectionIds": [None]}, '"connectionIds"\\[0\\].*got null'),
        ({"action": "send", "connectionIds": ["a"]}, '"data" must be a string \\(got null\\)'),
        ({"action": "send", "connectionIds": ["a"], "data": 5}, '"data" must be a string'),
        ({"action": "broadcast", "data": {"x": 1}}, '"data" must be a string \\(got dict\\)'),
        (
            {"action": "broadcast", "data": "x", "isBase64Encoded": "true"},
            '"isBase64Encoded" must be true or false \\(got str\\)',
        ),
        (
            {"action": "broadcast", "data": "not base64!", "isBase64Encoded": True},
            '"data" is not valid base64',
        ),
        (
            {"action": "broadcast", "data": "QUJ", "isBase64Encoded": True},
            '"data" is not valid base64',
        ),
        (
            {"action": "broadcast", "data": "héllo", "isBase64Encoded": True},
            '"data" is not valid base64',
        ),
        ({"action": "broadcast", "data": "\ud800"}, '"data" holds lone surrogates'),
        ({"action": "close", "connectionIds": ["a"], "code": "1000"}, '"code" must be 1000'),
        ({"action": "close", "connectionIds": ["a"], "reason": 5}, '"reason" must be a string'),
    ],
)
def test_invalid_command_is_rejected_naming_the_field(command: Any, field: str) -> None:
    rejection = rejection_of(command)
    assert rejection.index == 0
    assert rejection.error.startswith("commands[0]: ")
    assert re.search(field, rejection.error), rejection.error
    assert rejection.as_json() == {"index": 0, "error": rejection.error}


def test_parse_command_raises_command_error() -> None:
    with pytest.raises(CommandError, match='"action"'):
        parse_command({"action": "nope"}, max_payload_bytes=LIMIT)


def test_valid_neighbours_are_kept_with_rejections_indexed() -> None:
    commands, rejections = parse(
        {"action": "send", "connectionIds": ["a"], "data": "one"},
        {"action": "send", "connectionIds": [], "data": "bad"},
        {"action": "close", "connectionIds": ["b"], "code": 4001},
        {"action": "close", "connectionIds": ["c"], "code": 1001},
        "garbage",
        {"action": "broadcast", "data": "two"},
    )
    assert commands == [
        Send(("a",), b"one", False),
        Close(("b",), 4001, ""),
        Broadcast(b"two", False),
    ]
    assert [rejection.index for rejection in rejections] == [1, 3, 4]
    assert rejections[0].error.startswith("commands[1]: ")
    assert '"connectionIds"' in rejections[0].error
    assert rejections[1].error.startswith("commands[3]: ")
    assert '"code"' in rejections[1].error
    assert "1001" in rejections[1].error
    assert rejections[2].error.startswith("commands[4]: ")


# Sizes ---------------------------------------------------------------------------------------


def test_data_size_limit_counts_bytes() -> None:
    ok, _ = parse({"action": "broadcast", "data": "x" * 10}, limit=10)
    assert ok == [Broadcast(b"x" * 10, False)]
    rejection = rejection_of({"action": "broadcast", "data": "x" * 11}, limit=10)
    assert '"data" is 11 bytes' in rejection.error
    assert "is 10" in rejection.error
    # Five characters, ten bytes of UTF-8: the limit is on bytes.
    assert parse({"action": "broadcast", "data": "é" * 5}, limit=10)[0] == [
        Broadcast("é".encode() * 5, False)
    ]
    assert '"data" is 12 bytes' in rejection_of({"action": "broadcast", "data": "é" * 6}, 10).error


def test_binary_size_limit_counts_decoded_bytes() -> None:
    eleven = base64.b64encode(b"\x01" * 11).decode()
    ten = base64.b64encode(b"\x01" * 10).decode()
    assert len(ten) > 10  # the encoded form is longer than the limit, the decoded one is not
    commands, _ = parse({"action": "broadcast", "data": ten, "isBase64Encoded": True}, limit=10)
    assert commands == [Broadcast(b"\x01" * 10, True)]
    rejection = rejection_of(
        {"action": "send", "connectionIds": ["a"], "data": eleven, "isBase64Encoded": True}, 10
    )
    assert '"data" is 11 bytes' in rejection.error


# Close rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 3000, 3001, 4000, 4999])
def test_allowed_close_codes(code: int) -> None:
    commands, rejections = parse({"action": "close", "connectionIds": ["a"], "code": code})
    assert rejections == []
    assert commands == [Close(("a",), code, "")]


@pytest.mark.parametrize(
    "code", [0, 999, 1001, 1005, 1006, 1011, 1015, 2999, 5000, -1000, True, 1000.0, None, "4000"]
)
def test_other_close_codes_are_rejected(code: Any) -> None:
    rejection = rejection_of({"action": "close", "connectionIds": ["a"], "code": code})
    assert '"code" must be 1000 or between 3000 and 4999' in rejection.error
    assert repr(code) in rejection.error


def test_close_reason_limit_is_123_utf8_bytes() -> None:
    for reason in ("r" * 123, "€" * 41):  # 123 bytes each
        commands, rejections = parse({"action": "close", "connectionIds": ["a"], "reason": reason})
        assert rejections == []
        assert commands[0].reason == reason
    for reason, size in (("r" * 124, 124), ("é" * 62, 124)):  # 62 characters, 124 bytes
        rejection = rejection_of({"action": "close", "connectionIds": ["a"], "reason": reason})
        assert f'"reason" must be at most 123 bytes (got {size})' in rejection.error


def test_close_reason_with_lone_surrogate_is_rejected() -> None:
    raw = b'{"commands": [{"action": "close", "connectionIds": ["a"], "reason": "\\ud800"}]}'
    commands, rejections = parse_body(raw, max_payload_bytes=LIMIT)
    assert commands == []
    assert [rejection.index for rejection in rejections] == [0]
    assert '"reason"' in rejections[0].error


# Encoding ------------------------------------------------------------------------------------


def test_encode_commands_round_trips() -> None:
    commands = [
        Send(("a", "b"), 'héllo "q" \\ \n 😀'.encode(), False),
        Send(("c",), b"\x00\xff\xfe binary", True),
        Close(("d", "e"), 4321, "bye ✓"),
        Close(("f",), 1000, ""),
        Broadcast(b"to all", False),
        Broadcast(bytes(range(256)), True),
        Send(("g",), b"", False),
    ]
    encoded = encode_commands(commands)
    assert isinstance(encoded, bytes)
    assert parse_body(encoded, max_payload_bytes=LIMIT) == (commands, [])
    document = json.loads(encoded)
    assert document["commands"][1]["isBase64Encoded"] is True
    assert base64.b64decode(document["commands"][1]["data"]) == b"\x00\xff\xfe binary"
    assert "connectionIds" not in document["commands"][4]


def test_parsed_body_reencodes_to_the_same_commands() -> None:
    commands, _ = parse(
        {"action": "send", "connectionIds": ["a", "a", "b"], "data": "x"},
        {"action": "close", "connectionIds": ["c"]},
        {
            "action": "broadcast",
            "data": base64.b64encode(b"\x80").decode(),
            "isBase64Encoded": True,
        },
    )
    assert parse_body(encode_commands(commands), max_payload_bytes=LIMIT) == (commands, [])


# publish -------------------------------------------------------------------------------------


def test_publish_keeps_its_context_as_json_text() -> None:
    commands, rejections = parse(
        {"action": "publish", "keys": ["room:a", "room:b", "room:a"], "context": {"t": "é"}},
        {"action": "publish", "keys": ["k"]},
    )
    assert rejections == []
    assert commands == [
        Publish(("room:a", "room:b"), '{"t":"é"}'.encode()),
        Publish(("k",), b"null"),
    ]
    assert parse_body(encode_commands(commands), max_payload_bytes=LIMIT) == (commands, [])


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ({"action": "publish"}, 'a publish needs "channel" (to its subscribers) or "keys"'),
        ({"action": "publish", "keys": None}, '"keys" must be a non-empty list'),
        ({"action": "publish", "keys": []}, '"keys" must be a non-empty list'),
        ({"action": "publish", "keys": "room"}, '"keys" must be a non-empty list'),
        ({"action": "publish", "keys": ["a", 3]}, '"keys"[1] must be a string'),
        ({"action": "publish", "keys": [""]}, '"keys"[0] must be a string of 1 to 256'),
        ({"action": "publish", "keys": ["k" * 257]}, '"keys"[0] must be a string of 1 to 256'),
        ({"action": "publish", "keys": ["k"] * 1001}, "at most 1000 keys"),
        ({"action": "publish", "keys": ["k"], "context": "\ud800"}, "lone surrogates"),
        ({"action": "publish", "keys": ["k\ud800"]}, '"keys"[0] holds lone surrogates'),
        ({"action": "publish", "keys": ["k"], "context": "x" * LIMIT}, "most it may be"),
    ],
)
def test_invalid_publish_is_rejected(command: Any, error: str) -> None:
    assert error in rejection_of(command).error
