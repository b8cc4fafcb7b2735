"""The origin SDK: read gateway events in a Lambda function, send commands from anywhere.

Needs only boto3 and the standard library, so it fits in a Lambda deployment package as is.
The GraphQL origin, `runtime.origin.graphql`, also needs graphql-core, so it is not imported here.
"""

from __future__ import annotations

from runtime.origin.client import (
    CommandPublishError,
    GatewayClient,
    InvalidConnectionId,
    MessageTooLarge,
    PublishFailure,
)
from runtime.origin.events import (
    EventFormatError,
    GatewayRecord,
    event_type,
    gateway_handler,
    lazy_handler,
    message_data,
    parse_event_body,
    read_events,
    read_records,
)

__all__ = [
    "CommandPublishError",
    "EventFormatError",
    "GatewayClient",
    "GatewayRecord",
    "InvalidConnectionId",
    "MessageTooLarge",
    "PublishFailure",
    "event_type",
    "gateway_handler",
    "lazy_handler",
    "message_data",
    "parse_event_body",
    "read_events",
    "read_records",
]
