"""Commands as one node forwards them to another over the peer link: compact binary, not JSON.

The forwarding node has already validated every command (and every connection ID, which routing
parsed), and the peer link's MAC proves which node sent them, so the receiver rebuilds them
without checking each field again. Binary payloads travel as they are, without base64.

Layout (big-endian): version (1) | count (4), then per command a kind (1) and:

    send       binary (1) | IDs length (4) | IDs (ASCII, newline-separated)
               | payload length (4) | payload
    close      code (2) | reason length (2) | reason (UTF-8) | IDs length (4) | IDs
    broadcast  binary (1) | payload length (4) | payload
    publish    keys length (4) | keys (UTF-8, newline-separated) | context length (4) | context
    ask        request ID (8) | action (1: get 1, post 2, delete 3) | binary (1)
               | reply-to host length (1) | host (ASCII) | reply-to port (2)
               | ID length (2) | ID (ASCII) | payload length (4) | payload
    answer     request ID (8) | status (2) | info length (4) | info (JSON or empty)

Connection IDs are URL-safe base64, so a newline never occurs inside one. Publish keys may hold
any character, so a key with a newline makes the forwarding node send JSON keys instead (flag 1
in place of 0 before the keys length).

Ask and answer (the @connections API answered by the owning node) came later within version 1:
a node of older code refuses a batch holding one as of an unknown kind, as it would any, and the
asking node's wait ends at its bound. They are only ever built by nodes, never from an origin.
"""

from __future__ import annotations

import json
import struct

from runtime.wire.commands import Answer, Ask, Broadcast, Close, PeerCommand, Publish, Send
from runtime.wire.connection_id import NodeAddress

VERSION = 1
SEND, CLOSE, BROADCAST, PUBLISH, ASK, ANSWER = 1, 2, 3, 4, 5, 6
ASK_ACTIONS = {"get": 1, "post": 2, "delete": 3}
_ACTIONS_BY_CODE = {code: action for action, code in ASK_ACTIONS.items()}

_HEAD = struct.Struct(">BI")
_SEND = struct.Struct(">BBI")
_CLOSE = struct.Struct(">BHH")
_BROADCAST = struct.Struct(">BBI")
_PUBLISH = struct.Struct(">BBI")
_ASK = struct.Struct(">BQBBB")
_ANSWER = struct.Struct(">BQHI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class ForwardedFormatError(ValueError):
    """Bytes that no node of this version wrote (a peer running incompatible code)."""


def encode_forwarded(commands: list[PeerCommand]) -> bytes:
    parts = [_HEAD.pack(VERSION, len(commands))]
    append = parts.append
    for command in commands:
        if isinstance(command, Send):
            ids = "\n".join(command.connection_ids).encode("ascii")
            append(_SEND.pack(SEND, command.binary, len(ids)))
            append(ids)
            append(_U32.pack(len(command.payload)))
            append(command.payload)
        elif isinstance(command, Close):
            reason = command.reason.encode("utf-8")
            ids = "\n".join(command.connection_ids).encode("ascii")
            append(_CLOSE.pack(CLOSE, command.code, len(reason)))
            append(reason)
            append(_U32.pack(len(ids)))
            append(ids)
        elif isinstance(command, Publish):
            as_json = any("\n" in key for key in command.keys)
            keys = (json.dumps(list(command.keys)) if as_json else "\n".join(command.keys)).encode(
                "utf-8"
            )
            append(_PUBLISH.pack(PUBLISH, as_json, len(keys)))
            append(keys)
            append(_U32.pack(len(command.context)))
            append(command.context)
        elif isinstance(command, Ask):
            host = command.reply_to.host.encode("ascii")
            connection_id = command.connection_id.encode("ascii")
            append(
                _ASK.pack(
                    ASK,
                    command.request_id,
                    ASK_ACTIONS[command.action],
                    command.binary,
                    len(host),
                )
            )
            append(host)
            append(_U16.pack(command.reply_to.port))
            append(_U16.pack(len(connection_id)))
            append(connection_id)
            append(_U32.pack(len(command.payload)))
            append(command.payload)
        elif isinstance(command, Answer):
            append(_ANSWER.pack(ANSWER, command.request_id, command.status, len(command.info)))
            append(command.info)
        else:
            append(_BROADCAST.pack(BROADCAST, command.binary, len(command.payload)))
            append(command.payload)
    return b"".join(parts)


def decode_forwarded(data: bytes) -> list[PeerCommand]:
    try:
        return _decode(data)
    except ForwardedFormatError:
        raise
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        # ValueError: JSON keys, or an ask's reply-to address that is no IP address and port.
        raise ForwardedFormatError(f"unreadable forwarded commands: {exc}") from None


def _decode(data: bytes) -> list[PeerCommand]:
    version, count = _HEAD.unpack_from(data, 0)
    if version != VERSION:
        raise ForwardedFormatError(f"forwarded commands of unknown version {version}")
    offset = _HEAD.size
    commands: list[PeerCommand] = []
    for _ in range(count):
        kind = data[offset]
        if kind == SEND:
            _, binary, ids_length = _SEND.unpack_from(data, offset)
            offset += _SEND.size
            ids = tuple(data[offset : offset + ids_length].decode("ascii").split("\n"))
            offset += ids_length
            (length,) = _U32.unpack_from(data, offset)
            offset += 4
            commands.append(Send(ids, data[offset : offset + length], bool(binary)))
            offset += length
        elif kind == CLOSE:
            _, code, reason_length = _CLOSE.unpack_from(data, offset)
            offset += _CLOSE.size
            reason = data[offset : offset + reason_length].decode("utf-8")
            offset += reason_length
            (ids_length,) = _U32.unpack_from(data, offset)
            offset += 4
            ids = tuple(data[offset : offset + ids_length].decode("ascii").split("\n"))
            offset += ids_length
            commands.append(Close(ids, code, reason))
        elif kind == BROADCAST:
            _, binary, length = _BROADCAST.unpack_from(data, offset)
            offset += _BROADCAST.size
            commands.append(Broadcast(data[offset : offset + length], bool(binary)))
            offset += length
        elif kind == PUBLISH:
            _, as_json, keys_length = _PUBLISH.unpack_from(data, offset)
            offset += _PUBLISH.size
            text = data[offset : offset + keys_length].decode("utf-8")
            keys = _json_keys(text) if as_json else tuple(text.split("\n"))
            offset += keys_length
            (length,) = _U32.unpack_from(data, offset)
            offset += 4
            commands.append(Publish(keys, data[offset : offset + length]))
            offset += length
        elif kind == ASK:
            ask, offset = _decode_ask(data, offset)
            commands.append(ask)
        elif kind == ANSWER:
            _, request_id, status, length = _ANSWER.unpack_from(data, offset)
            offset += _ANSWER.size
            commands.append(Answer(request_id, status, data[offset : offset + length]))
            offset += length
        else:
            raise ForwardedFormatError(f"forwarded command of unknown kind {kind}")
    if offset != len(data):
        raise ForwardedFormatError(f"{len(data) - offset} bytes after the last forwarded command")
    return commands


def _decode_ask(data: bytes, offset: int) -> tuple[Ask, int]:
    _, request_id, action_code, binary, host_length = _ASK.unpack_from(data, offset)
    offset += _ASK.size
    action = _ACTIONS_BY_CODE.get(action_code)
    if action is None:
        raise ForwardedFormatError(f"forwarded ask of unknown action {action_code}")
    host = data[offset : offset + host_length].decode("ascii")
    offset += host_length
    (port,) = _U16.unpack_from(data, offset)
    offset += 2
    (id_length,) = _U16.unpack_from(data, offset)
    offset += 2
    connection_id = data[offset : offset + id_length].decode("ascii")
    offset += id_length
    (length,) = _U32.unpack_from(data, offset)
    offset += 4
    payload = data[offset : offset + length]
    offset += length
    reply_to = NodeAddress(host, port)  # ValueError for what is no address
    return Ask(request_id, reply_to, connection_id, action, payload, bool(binary)), offset


def _json_keys(text: str) -> tuple[str, ...]:
    keys = json.loads(text)
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ForwardedFormatError("forwarded publish keys are not a list of strings")
    return tuple(keys)
