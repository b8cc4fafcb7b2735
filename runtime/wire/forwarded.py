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
    subscribe  presence events (1) | IDs length (4) | IDs | channels length (4) | channels
               | userInfo length (4) | userInfo (JSON or empty)
    unsubscribe  IDs length (4) | IDs | channels length (4) | channels
    channel publish  binary (1) | channel length (2) | channel | except IDs length (4)
               | except IDs | payload length (4) | payload
    interest   full (1) | node host length (1) | host (ASCII) | node port (2)
               | added length (4) | added | removed length (4) | removed
    presence ask  request ID (8) | limit (4) | reply-to host length (1) | host | reply-to port (2)
               | channel length (2) | channel | after length (1) | after (ASCII)
    presence answer  request ID (8) | more (1) | count (8) | members length (4) | members (JSON)

Connection IDs are URL-safe base64, so a newline never occurs inside one. Publish keys may hold
any character, so a key with a newline makes the forwarding node send JSON keys instead (flag 1
in place of 0 before the keys length). Channel names never hold a newline (`wire/channels.py`),
so lists of them are newline-joined UTF-8, and an empty list is empty.

Ask and answer (the @connections API answered by the owning node) came later within version 1:
a node of older code refuses a batch holding one as of an unknown kind, as it would any, and the
asking node's wait ends at its bound. They are only ever built by nodes, never from an origin.
The channel kinds (subscribe, unsubscribe, channel publish, interest) came later within version 1
the same way: an older node refuses a batch holding one, and never hears of channels. So did
the presence ask and answer: an older node's members are missing from presence answers (partial).

Longer than 400 lines because every kind's layout, encoder and decoder must agree byte for byte,
and reading them side by side in one module is how that is checked.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

from runtime.wire.commands import (
    Answer,
    Ask,
    Broadcast,
    ChannelPublish,
    Close,
    Interest,
    PeerCommand,
    PresenceAnswer,
    PresenceAsk,
    Publish,
    Send,
    Subscribe,
    Unsubscribe,
)
from runtime.wire.connection_id import NodeAddress

VERSION = 1
SEND, CLOSE, BROADCAST, PUBLISH, ASK, ANSWER = 1, 2, 3, 4, 5, 6
SUBSCRIBE, UNSUBSCRIBE, CHANNEL_PUBLISH, INTEREST = 7, 8, 9, 10
PRESENCE_ASK, PRESENCE_ANSWER = 11, 12
ASK_ACTIONS = {"get": 1, "post": 2, "delete": 3}
_ACTIONS_BY_CODE = {code: action for action, code in ASK_ACTIONS.items()}

_HEAD = struct.Struct(">BI")
_SEND = struct.Struct(">BBI")
_CLOSE = struct.Struct(">BHH")
_BROADCAST = struct.Struct(">BBI")
_PUBLISH = struct.Struct(">BBI")
_ASK = struct.Struct(">BQBBB")
_ANSWER = struct.Struct(">BQHI")
_FLAG = struct.Struct(">BB")  # kind, then one flag byte
_CHANNEL_PUBLISH = struct.Struct(">BBH")
_PRESENCE_ASK = struct.Struct(">BQI")
_PRESENCE_ANSWER = struct.Struct(">BQBQ")
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
        elif isinstance(command, Broadcast):
            append(_BROADCAST.pack(BROADCAST, command.binary, len(command.payload)))
            append(command.payload)
        else:
            _encode_channel_command(command, append)
    return b"".join(parts)


def _encode_channel_command(
    command: Subscribe | Unsubscribe | ChannelPublish | Interest | PresenceAsk | PresenceAnswer,
    append: Callable[[bytes], None],
) -> None:
    if isinstance(command, PresenceAsk):
        append(_PRESENCE_ASK.pack(PRESENCE_ASK, command.request_id, command.limit))
        _append_node(command.reply_to, append)
        channel = command.channel.encode("utf-8")
        append(_U16.pack(len(channel)))
        append(channel)
        after = command.after.encode("ascii")
        append(bytes((len(after),)))
        append(after)
    elif isinstance(command, PresenceAnswer):
        append(
            _PRESENCE_ANSWER.pack(PRESENCE_ANSWER, command.request_id, command.more, command.count)
        )
        _append_sized(command.members, append)
    elif isinstance(command, Subscribe):
        # Flags: 1 presence events, 2 occupancy events (added later within version 1).
        flags = command.presence_events | command.occupancy_events << 1
        append(_FLAG.pack(SUBSCRIBE, flags))
        _append_sized(_joined_ids(command.connection_ids), append)
        _append_sized(_joined_names(command.channels), append)
        _append_sized(command.user_info, append)
    elif isinstance(command, Unsubscribe):
        append(bytes((UNSUBSCRIBE,)))
        _append_sized(_joined_ids(command.connection_ids), append)
        _append_sized(_joined_names(command.channels), append)
    elif isinstance(command, ChannelPublish):
        channel = command.channel.encode("utf-8")
        append(_CHANNEL_PUBLISH.pack(CHANNEL_PUBLISH, command.binary, len(channel)))
        append(channel)
        _append_sized(_joined_ids(command.except_ids), append)
        _append_sized(command.payload, append)
    else:
        # Flags: 1 full, 2 answer with your full list (added later within version 1).
        append(_FLAG.pack(INTEREST, command.full | command.answer_me << 1))
        _append_node(command.node, append)
        _append_sized(_joined_names(command.added), append)
        _append_sized(_joined_names(command.removed), append)


def _append_node(node: NodeAddress, append: Callable[[bytes], None]) -> None:
    host = node.host.encode("ascii")
    append(bytes((len(host),)))
    append(host)
    append(_U16.pack(node.port))


def _append_sized(data: bytes, append: Callable[[bytes], None]) -> None:
    append(_U32.pack(len(data)))
    append(data)


def _joined_ids(ids: tuple[str, ...]) -> bytes:
    return "\n".join(ids).encode("ascii")


def _joined_names(names: tuple[str, ...]) -> bytes:
    joined = "\n".join(names)
    if names and (joined.count("\n") != len(names) - 1 or "" in names):
        raise ValueError("a channel name to forward is empty or holds a newline")
    return joined.encode("utf-8")


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
        elif kind in _CHANNEL_DECODERS:
            channel_command, offset = _CHANNEL_DECODERS[kind](data, offset)
            commands.append(channel_command)
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


def _sized(data: bytes, offset: int) -> tuple[bytes, int]:
    """A length-prefixed field (4 bytes of length) and the offset after it."""
    (length,) = _U32.unpack_from(data, offset)
    offset += 4
    end = offset + length
    if end > len(data):
        raise ForwardedFormatError("a forwarded field runs past the end of the batch")
    return data[offset:end], end


def _lines(field: bytes, encoding: str) -> tuple[str, ...]:
    """Newline-joined names or IDs; none when the field is empty."""
    return tuple(field.decode(encoding).split("\n")) if field else ()


def _decode_subscribe(data: bytes, offset: int) -> tuple[Subscribe, int]:
    flags = data[offset + 1]
    ids, offset = _sized(data, offset + _FLAG.size)
    channels, offset = _sized(data, offset)
    user_info, offset = _sized(data, offset)
    return Subscribe(
        _lines(ids, "ascii"),
        _lines(channels, "utf-8"),
        user_info,
        bool(flags & 1),
        bool(flags & 2),
    ), offset


def _decode_unsubscribe(data: bytes, offset: int) -> tuple[Unsubscribe, int]:
    ids, offset = _sized(data, offset + 1)
    channels, offset = _sized(data, offset)
    return Unsubscribe(_lines(ids, "ascii"), _lines(channels, "utf-8")), offset


def _decode_channel_publish(data: bytes, offset: int) -> tuple[ChannelPublish, int]:
    _, binary, channel_length = _CHANNEL_PUBLISH.unpack_from(data, offset)
    offset += _CHANNEL_PUBLISH.size
    channel = data[offset : offset + channel_length].decode("utf-8")
    except_ids, offset = _sized(data, offset + channel_length)
    payload, offset = _sized(data, offset)
    return ChannelPublish(channel, payload, bool(binary), _lines(except_ids, "ascii")), offset


def _decode_interest(data: bytes, offset: int) -> tuple[Interest, int]:
    flags = data[offset + 1]
    node, offset = _node_at(data, offset + 2)
    added, offset = _sized(data, offset)
    removed, offset = _sized(data, offset)
    interest = Interest(
        node, _lines(added, "utf-8"), _lines(removed, "utf-8"), bool(flags & 1), bool(flags & 2)
    )
    return interest, offset


def _decode_presence_ask(data: bytes, offset: int) -> tuple[PresenceAsk, int]:
    _, request_id, limit = _PRESENCE_ASK.unpack_from(data, offset)
    reply_to, offset = _node_at(data, offset + _PRESENCE_ASK.size)
    (channel_length,) = _U16.unpack_from(data, offset)
    offset += 2
    channel = data[offset : offset + channel_length].decode("utf-8")
    offset += channel_length
    after_length = data[offset]
    after = data[offset + 1 : offset + 1 + after_length].decode("ascii")
    offset += 1 + after_length
    if offset > len(data):
        raise ForwardedFormatError("a forwarded field runs past the end of the batch")
    return PresenceAsk(request_id, reply_to, channel, after, limit), offset


def _decode_presence_answer(data: bytes, offset: int) -> tuple[PresenceAnswer, int]:
    _, request_id, more, count = _PRESENCE_ANSWER.unpack_from(data, offset)
    members, offset = _sized(data, offset + _PRESENCE_ANSWER.size)
    return PresenceAnswer(request_id, count, members, bool(more)), offset


def _node_at(data: bytes, offset: int) -> tuple[NodeAddress, int]:
    """A node's address (host length, ASCII host, port) and the offset after it."""
    host_length = data[offset]
    host = data[offset + 1 : offset + 1 + host_length].decode("ascii")
    offset += 1 + host_length
    (port,) = _U16.unpack_from(data, offset)
    return NodeAddress(host, port), offset + 2  # ValueError for what is no address


_CHANNEL_DECODERS: dict[int, Callable[[bytes, int], tuple[PeerCommand, int]]] = {
    SUBSCRIBE: _decode_subscribe,
    UNSUBSCRIBE: _decode_unsubscribe,
    CHANNEL_PUBLISH: _decode_channel_publish,
    INTEREST: _decode_interest,
    PRESENCE_ASK: _decode_presence_ask,
    PRESENCE_ANSWER: _decode_presence_answer,
}


def _json_keys(text: str) -> tuple[str, ...]:
    keys = json.loads(text)
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ForwardedFormatError("forwarded publish keys are not a list of strings")
    return tuple(keys)
