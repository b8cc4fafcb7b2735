"""Commands from any origin (a Lambda function, a service) to connections in any region.

A connection ID names its region, so the client routes each command to that region's commands
topic without knowing the topology. Commands are buffered and published together by `flush()`:
one PublishBatch carries up to ten messages, each holding many commands, which is what makes a
fan-out to a chat room one or two calls instead of one per recipient. SNS throttling and server
errors are retried by botocore (standard retry mode); entries that a PublishBatch reports failed
are retried here, then reported in a CommandPublishError, never dropped silently.

Channels: `subscribe` and `unsubscribe` go, like `send`, to the region of each connection; a
`publish_to_channel` goes to every region of the environment (`regions=`, or WSGW_REGIONS), since
each region's nodes know only their own subscribers.

Order: commands stay in call order and a message holds a consecutive run of them, so the commands
of one connection inside one message are carried out in order. The commands queue is a standard
SQS queue, so two messages may be handled in either order.

Not thread-safe: use one client per thread (clients to AWS are created lazily and are cheap to
share within a thread).

Longer than 400 lines because it is the one class origins hold: the typed command helpers, the
buffer, region routing and retries share its state.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.names import ResourceNames
from runtime.origin.channels import ChannelRules, check_channel, check_channels, user_info_json
from runtime.origin.packing import (
    DEFAULT_MAX_MESSAGE_BYTES,
    EncodedCommand,
    MessageTooLarge,
    broadcast_command,
    channel_publish_command,
    check_max_message_bytes,
    close_commands,
    pack_batches,
    pack_messages,
    payload_json,
    publish_command,
    send_commands,
    subscribe_commands,
    unsubscribe_commands,
)
from runtime.wire.commands import CommandError, Publish, parse_command
from runtime.wire.connection_id import MAX_REGION_LENGTH, InvalidConnectionId, parse_connection_id

__all__ = [
    "ACCOUNT_VARIABLE",
    "BOTO_CONFIG",
    "ENVIRONMENT_VARIABLE",
    "REGIONS_VARIABLE",
    "ChannelRules",
    "ClientFactory",
    "CommandPublishError",
    "GatewayClient",
    "GoneException",
    "InvalidConnectionId",
    "MessageTooLarge",
    "PublishFailure",
    "Savepoint",
]

log = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "WSGW_ENVIRONMENT"
ACCOUNT_VARIABLE = "WSGW_ACCOUNT_ID"
REGIONS_VARIABLE = "WSGW_REGIONS"  # the environment's regions, comma-separated
# Throttling and 5xx answers are retried by botocore, with backoff, before a call fails.
BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})

ClientFactory = Callable[[str, str], Any]
"""(service, region) -> a boto3 client; the default one uses boto3's standard chain."""


@dataclass(frozen=True, slots=True)
class PublishFailure:
    """One message (a body of commands) that did not reach its region's commands topic."""

    region: str
    topic_arn: str
    body: str
    code: str
    message: str


class CommandPublishError(RuntimeError):
    """Some messages were not published; `failures` holds them, so a caller may publish again."""

    def __init__(self, failures: Sequence[PublishFailure], messages: int) -> None:
        self.failures = list(failures)
        kinds: dict[tuple[str, str, str], int] = {}
        for failure in failures:
            key = (failure.region, failure.code, failure.message)
            kinds[key] = kinds.get(key, 0) + 1
        details = "; ".join(
            f"{region}: {count} x {code} ({message})"
            for (region, code, message), count in kinds.items()
        )
        super().__init__(
            f"{len(failures)} of {messages} command messages were not published: {details}"
        )


class GoneException(Exception):
    """For code ported from API Gateway that catches it: never raised here.

    A command naming a closed connection is accepted, and the origin later gets a GONE event.
    """


class _Exceptions:
    GoneException = GoneException


class _CallFailed(Exception):
    """A whole PublishBatch call failed (after botocore's retries); its region is down for us."""

    def __init__(
        self, code: str, message: str, unsent: list[str], refused: list[PublishFailure]
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.unsent = unsent
        self.refused = refused  # entries an earlier attempt of the batch had failed for good


@dataclass(frozen=True, slots=True)
class Savepoint:
    """Where the buffer stood: after how many flushes, and how many commands long."""

    flushes: int
    length: int


@dataclass(frozen=True, slots=True)
class _Buffered:
    region: str
    command: EncodedCommand


class GatewayClient:
    """Buffers commands and publishes them to each region's commands topic on `flush()`.

    Topic ARNs come from `topic_arns` when it names the region, else from the environment's
    resource names, the region and the account (`account`, WSGW_ACCOUNT_ID, or STS, asked once).
    The environment's regions, where a channel publish goes, come from `regions` or WSGW_REGIONS;
    `channel_rules` mirrors the nodes' channel settings when a deployment changes them.
    """

    exceptions = _Exceptions

    def __init__(
        self,
        *,
        environment: str | None = None,
        account: str | None = None,
        region: str | None = None,
        regions: Iterable[str] | None = None,
        topic_arns: Mapping[str, str] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_rules: ChannelRules | None = None,
        publish_attempts: int = 4,
        retry_delay: float = 0.05,
        client_factory: ClientFactory | None = None,
    ) -> None:
        environment = environment or os.environ.get(ENVIRONMENT_VARIABLE) or None
        self._names = ResourceNames(environment) if environment else None
        self._account = account or os.environ.get(ACCOUNT_VARIABLE) or None
        self.default_region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        )
        self.regions = _environment_regions(regions)
        self.channel_rules = channel_rules or ChannelRules()
        self._topic_arns = dict(topic_arns or {})
        self.max_message_bytes = check_max_message_bytes(max_message_bytes)
        if publish_attempts < 1:
            raise ValueError(f"publish_attempts must be at least 1 (got {publish_attempts})")
        self._publish_attempts = publish_attempts
        self._retry_delay = retry_delay
        self._client_factory = client_factory or self._default_client
        self._session: boto3.session.Session | None = None
        self._sns_clients: dict[str, Any] = {}
        self._buffer: list[_Buffered] = []
        self._flushes = 0

    # Commands ----------------------------------------------------------------------------------

    def send(self, connection_ids: str | Iterable[str], data: str | bytes) -> None:
        """Buffer a message to connections: str goes as text, bytes as binary (base64)."""
        data_json, binary = payload_json(data)
        commands = [
            _Buffered(region, command)
            for region, ids in self._by_region(connection_ids).items()
            for command in send_commands(ids, data_json, binary, self.max_message_bytes)
        ]
        self._buffer.extend(commands)

    def close(
        self, connection_ids: str | Iterable[str], code: int = 1000, reason: str = ""
    ) -> None:
        """Buffer a close: code 1000 or 3000-4999, reason up to 123 UTF-8 bytes."""
        try:  # the node's own rules, so what passes here passes there
            parse_command(
                {"action": "close", "connectionIds": ["-"], "code": code, "reason": reason},
                max_payload_bytes=0,
            )
        except CommandError as exc:
            raise ValueError(f"close: {exc}") from None
        commands = [
            _Buffered(region, command)
            for region, ids in self._by_region(connection_ids).items()
            for command in close_commands(ids, code, reason, self.max_message_bytes)
        ]
        self._buffer.extend(commands)

    def broadcast(self, data: str | bytes, *, regions: Iterable[str] | None = None) -> None:
        """Buffer a message to every connection of every node of the regions (default: ours)."""
        targets = self._regions(regions, "broadcast")
        data_json, binary = payload_json(data)
        command = broadcast_command(data_json, binary, self.max_message_bytes)
        self._buffer.extend(_Buffered(target, command) for target in targets)

    def publish(
        self,
        keys: str | Iterable[str],
        context: Any = None,
        *,
        regions: Iterable[str] | None = None,
    ) -> None:
        """Buffer a publish: every node of the regions (default: ours) re-runs the GraphQL
        subscriptions that have one of the keys, with `context` (any JSON value) as the
        GraphQL origin's publishContext. 1 to 1,000 keys of 1 to 256 characters.
        """
        targets = self._regions(regions, "publish")
        key_list = [keys] if isinstance(keys, str) else list(keys)
        try:  # the node's own rules, so what passes here passes there
            parsed = parse_command(
                {"action": "publish", "keys": key_list}, max_payload_bytes=self.max_message_bytes
            )
        except CommandError as exc:
            raise ValueError(f"publish: {exc}") from None
        assert isinstance(parsed, Publish)
        command = publish_command(parsed.keys, context, self.max_message_bytes)
        self._buffer.extend(_Buffered(target, command) for target in targets)

    # Channels ----------------------------------------------------------------------------------

    def subscribe(
        self,
        connection_ids: str | Iterable[str],
        channels: str | Iterable[str],
        *,
        user_info: Any = None,
        presence_events: bool = False,
        occupancy_events: bool = False,
    ) -> None:
        """Buffer a subscribe: the connections join 1 to 100 channels on the nodes holding them.

        `user_info` (any JSON value, None for none) is kept with each subscription and returned
        by presence queries (`runtime.origin.presence.PresenceClient`) and in JOIN/LEAVE events;
        `presence_events` asks for those events of these subscriptions; `occupancy_events` asks
        for the channels' periodic OCCUPANCY events (their member counts).
        """
        names = self._channels(channels, "subscribe")
        for flag, value in (
            ("presence_events", presence_events),
            ("occupancy_events", occupancy_events),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"subscribe: {flag} must be True or False (got {value!r})")
        try:
            info = None if user_info is None else user_info_json(user_info, self.channel_rules)
        except ValueError as exc:
            raise ValueError(f"subscribe: {exc}") from None
        commands = [
            _Buffered(region, command)
            for region, ids in self._by_region(connection_ids).items()
            for command in subscribe_commands(
                ids, names, info, presence_events, self.max_message_bytes, occupancy_events
            )
        ]
        self._buffer.extend(commands)

    def unsubscribe(
        self, connection_ids: str | Iterable[str], channels: str | Iterable[str]
    ) -> None:
        """Buffer an unsubscribe: the connections leave the channels (ones they never joined are
        no error)."""
        names = self._channels(channels, "unsubscribe")
        commands = [
            _Buffered(region, command)
            for region, ids in self._by_region(connection_ids).items()
            for command in unsubscribe_commands(ids, names, self.max_message_bytes)
        ]
        self._buffer.extend(commands)

    def publish_to_channel(
        self,
        channel: str,
        data: str | bytes,
        *,
        except_ids: str | Iterable[str] = (),
        regions: Iterable[str] | None = None,
    ) -> None:
        """Buffer a message to every subscriber of a channel: str goes as text, bytes as binary.

        It goes to every region of the environment (the client's `regions` or WSGW_REGIONS) unless
        `regions` names some. The connections in `except_ids` (e.g. the sender) are left out;
        each region is sent only its own of them.
        """
        try:
            name = check_channel(channel, self.channel_rules)
        except ValueError as exc:
            raise ValueError(f"publish_to_channel: {exc}") from None
        targets = self._every_region(regions, "publish_to_channel")
        excluded = self._by_region(except_ids, "except_ids")
        data_json, binary = payload_json(data)
        commands = [
            _Buffered(
                target,
                channel_publish_command(
                    name, data_json, binary, excluded.get(target, []), self.max_message_bytes
                ),
            )
            for target in targets
        ]
        self._buffer.extend(commands)

    # API Gateway management API ----------------------------------------------------------------

    def post_to_connection(self, *, ConnectionId: str, Data: str | bytes) -> None:
        """As API Gateway's: published at once (with what was buffered before, to keep order).

        API Gateway delivers Data as a text frame, so bytes that are UTF-8 go as text here too;
        other bytes go as a binary message.
        """
        message: str | bytes = Data
        if isinstance(Data, bytes | bytearray | memoryview):
            try:
                message = bytes(Data).decode("utf-8")
            except UnicodeDecodeError:
                message = bytes(Data)
        self.send(ConnectionId, message)
        self.flush()

    def delete_connection(self, *, ConnectionId: str) -> None:
        """As API Gateway's: the connection is closed with 1000, published at once."""
        self.close(ConnectionId)
        self.flush()

    # Publishing --------------------------------------------------------------------------------

    @property
    def pending_commands(self) -> int:
        return len(self._buffer)

    def savepoint(self) -> Savepoint:
        """A mark in the buffer; `rollback(mark)` drops what was buffered after it."""
        return Savepoint(self._flushes, len(self._buffer))

    def rollback(self, savepoint: Savepoint) -> None:
        """Drop commands buffered since the mark, as a failed event is retried and sends them again.

        Commands a flush published since the mark are gone already; what came after is dropped.
        """
        keep = savepoint.length if savepoint.flushes == self._flushes else 0
        del self._buffer[keep:]

    def flush(self) -> None:
        """Publish every buffered command; raise CommandPublishError naming what did not go."""
        if not self._buffer:
            return
        by_region: dict[str, list[EncodedCommand]] = {}
        for item in self._buffer:
            by_region.setdefault(item.region, []).append(item.command)
        arns = {region: self.topic_arn(region) for region in by_region}  # config errors first
        self._buffer = []
        self._flushes += 1
        failures: list[PublishFailure] = []
        messages = 0
        for region, commands in by_region.items():
            bodies = pack_messages(commands, self.max_message_bytes)
            messages += len(bodies)
            failures.extend(self._publish(region, arns[region], bodies))
        if failures:
            raise CommandPublishError(failures, messages)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.flush()
            return
        try:  # publish what the block buffered, but never hide the block's own error
            self.flush()
        except Exception:
            log.exception("could not publish buffered commands while leaving on an error")

    def topic_arn(self, region: str) -> str:
        """The commands topic of a region, as this client addresses it."""
        if region in self._topic_arns:
            return self._topic_arns[region]
        if self._names is None:
            raise ValueError(
                f"no commands topic for region {region!r}: pass environment= to GatewayClient "
                f"or set {ENVIRONMENT_VARIABLE} (or pass topic_arns={{{region!r}: ...}})"
            )
        arn = self._names.commands_topic_arn(region, self._account_id(region))
        self._topic_arns[region] = arn
        return arn

    def _publish(self, region: str, topic_arn: str, bodies: list[str]) -> list[PublishFailure]:
        sns = self._sns(region)
        failures: list[PublishFailure] = []
        batches = pack_batches(bodies, self.max_message_bytes)
        for index, batch in enumerate(batches):
            try:
                failures.extend(self._publish_batch(sns, region, topic_arn, batch))
            except _CallFailed as down:
                # The rest of this region would fail the same way (no topic, no permission).
                unsent = down.unsent + [body for rest in batches[index + 1 :] for body in rest]
                failures.extend(down.refused)
                failures.extend(
                    PublishFailure(region, topic_arn, body, down.code, down.message)
                    for body in unsent
                )
                break
        return failures

    def _publish_batch(
        self, sns: Any, region: str, topic_arn: str, batch: list[str]
    ) -> list[PublishFailure]:
        """Publish one batch; retry entries that failed on the service's side, with backoff."""
        pending = {str(index): body for index, body in enumerate(batch)}
        failures: list[PublishFailure] = []
        last_error: dict[str, tuple[str, str]] = {}
        for attempt in range(self._publish_attempts):
            if attempt:
                time.sleep(self._backoff(attempt))
            try:
                response = sns.publish_batch(
                    TopicArn=topic_arn,
                    PublishBatchRequestEntries=[
                        {"Id": entry_id, "Message": body} for entry_id, body in pending.items()
                    ],
                )
            except ClientError as exc:
                error = exc.response.get("Error", {})
                raise _CallFailed(
                    error.get("Code", "ClientError"),
                    error.get("Message", str(exc)),
                    [*pending.values()],
                    failures,
                ) from exc
            except BotoCoreError as exc:
                raise _CallFailed(
                    type(exc).__name__, str(exc), [*pending.values()], failures
                ) from exc
            retry: dict[str, str] = {}
            for failed in response.get("Failed", []):
                entry_id = failed.get("Id", "")
                if entry_id not in pending:
                    continue
                code, message = failed.get("Code", "Unknown"), failed.get("Message", "")
                if failed.get("SenderFault"):  # the same request would fail again
                    failures.append(
                        PublishFailure(region, topic_arn, pending[entry_id], code, message)
                    )
                else:
                    retry[entry_id] = pending[entry_id]
                    last_error[entry_id] = (code, message)
            pending = retry
            if not pending or attempt + 1 == self._publish_attempts:
                break
            log.warning(
                "PublishBatch: %d of its messages failed; retrying them",
                len(pending),
                extra={"region": region, "topicArn": topic_arn, "attempt": attempt + 1},
            )
        failures.extend(
            PublishFailure(region, topic_arn, body, *last_error[entry_id])
            for entry_id, body in pending.items()
        )
        return failures

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped at 2 s, with jitter so retrying clients do not move in step."""
        return min(2.0, self._retry_delay * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    # Routing and AWS clients -------------------------------------------------------------------

    def _every_region(self, regions: Iterable[str] | None, action: str) -> list[str]:
        """The regions a channel publish goes to: those given, or every one of the environment."""
        if regions is None:
            if self.regions is None:
                raise ValueError(
                    f"{action} goes to every region of the environment, and this client does not "
                    f"know them: pass regions= to GatewayClient or set {REGIONS_VARIABLE} "
                    "(comma-separated, e.g. us-east-1,eu-west-1), or name them with regions= "
                    "in this call"
                )
            regions = self.regions
        return self._regions(regions, action)

    def _channels(self, channels: str | Iterable[str], action: str) -> list[str]:
        try:
            return check_channels(channels, self.channel_rules)
        except ValueError as exc:
            raise ValueError(f"{action}: {exc}") from None

    def _regions(self, regions: Iterable[str] | None, action: str) -> list[str]:
        """The regions a command for every node goes to: those given, or the client's own."""
        if isinstance(regions, str):  # one region, not its characters
            regions = [regions]
        if regions is None:
            if self.default_region is None:
                raise ValueError(
                    f"{action} needs a region: pass regions=, or region= to GatewayClient, "
                    "or set AWS_REGION"
                )
            regions = [self.default_region]
        targets = list(dict.fromkeys(regions))
        for target in targets:
            if not isinstance(target, str) or not target:
                raise ValueError(f"regions must be non-empty strings (got {target!r})")
        return targets

    def _by_region(
        self, connection_ids: str | Iterable[str], name: str = "connection_ids"
    ) -> dict[str, list[str]]:
        """IDs grouped by the region they name, all checked before anything is buffered."""
        if isinstance(connection_ids, str):
            connection_ids = [connection_ids]
        regions: dict[str, list[str]] = {}
        seen: set[str] = set()
        for position, connection_id in enumerate(connection_ids):
            try:
                region = parse_connection_id(connection_id).region
            except InvalidConnectionId as exc:
                raise InvalidConnectionId(f"{name}[{position}]: {exc}") from None
            if connection_id not in seen:  # the node counts a repeated ID once anyway
                seen.add(connection_id)
                regions.setdefault(region, []).append(connection_id)
        return regions

    def _sns(self, region: str) -> Any:
        client = self._sns_clients.get(region)
        if client is None:
            client = self._sns_clients[region] = self._client_factory("sns", region)
        return client

    def _account_id(self, region: str) -> str:
        if self._account is None:
            identity = self._client_factory("sts", region).get_caller_identity()
            self._account = str(identity["Account"])
        return self._account

    def _default_client(self, service: str, region: str) -> Any:
        if self._session is None:
            self._session = boto3.session.Session()
        return self._session.client(service, region_name=region, config=BOTO_CONFIG)


def _environment_regions(regions: Iterable[str] | None) -> tuple[str, ...] | None:
    """The environment's regions from the argument, else WSGW_REGIONS; None when neither says."""
    if regions is None:
        text = os.environ.get(REGIONS_VARIABLE, "")
        listed = [part.strip() for part in text.split(",") if part.strip()]
        source = REGIONS_VARIABLE
        if not listed:
            return None
    else:
        listed = [regions] if isinstance(regions, str) else list(regions)
        source = "regions"
        if not listed:
            raise ValueError("regions must name at least one region (or leave it out)")
    for region in listed:
        if (
            not isinstance(region, str)
            or not region
            or len(region) > MAX_REGION_LENGTH
            or not region.isascii()
        ):
            raise ValueError(
                f"{source}: a region is 1 to {MAX_REGION_LENGTH} ASCII characters (got {region!r})"
            )
    return tuple(dict.fromkeys(listed))
