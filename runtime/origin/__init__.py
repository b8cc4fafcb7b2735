"""The origin SDK: read gateway events in a Lambda function, send commands from anywhere.

Needs only boto3 and the standard library, so it fits in a Lambda deployment package as is.
Handlers written for API Gateway run unchanged behind `runtime.origin.apigw.handler`.
The GraphQL origin, `runtime.origin.graphql`, also needs graphql-core, so it is not imported here.
"""

from __future__ import annotations

from runtime.origin.apigw import ApiGatewayOrigin, ApiGatewaySettings, HandlerSetupError
from runtime.origin.channels import ChannelRules
from runtime.origin.client import (
    CommandPublishError,
    GatewayClient,
    InvalidConnectionId,
    MessageTooLarge,
    PublishFailure,
)
from runtime.origin.events import (
    ChannelEvent,
    CommandBuffer,
    EventFormatError,
    GatewayRecord,
    channel_event,
    event_type,
    gateway_handler,
    lazy_handler,
    message_data,
    parse_event_body,
    parse_events,
    read_events,
    read_records,
)
from runtime.origin.presence import (
    ChannelCount,
    ChannelMember,
    MembersPage,
    PresenceClient,
    PresenceError,
)

__all__ = [
    "ApiGatewayOrigin",
    "ApiGatewaySettings",
    "ChannelCount",
    "ChannelEvent",
    "ChannelMember",
    "ChannelRules",
    "CommandBuffer",
    "CommandPublishError",
    "EventFormatError",
    "GatewayClient",
    "GatewayRecord",
    "HandlerSetupError",
    "InvalidConnectionId",
    "MembersPage",
    "MessageTooLarge",
    "PresenceClient",
    "PresenceError",
    "PublishFailure",
    "channel_event",
    "event_type",
    "gateway_handler",
    "lazy_handler",
    "message_data",
    "parse_event_body",
    "parse_events",
    "read_events",
    "read_records",
]
