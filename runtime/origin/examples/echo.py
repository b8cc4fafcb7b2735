"""Echo: every MESSAGE goes back to its sender, text as text and binary as binary.

The smallest useful origin, and a check that a deployment works end to end. Lambda handler:
`runtime.origin.examples.echo.handler` (settings: WSGW_ENVIRONMENT, and optionally
WSGW_ACCOUNT_ID; see runtime/origin/client.py).
"""

from __future__ import annotations

from runtime.origin.client import GatewayClient
from runtime.origin.events import (
    Event,
    LambdaHandler,
    event_type,
    gateway_handler,
    lazy_handler,
    message_data,
)


def build_handler(
    *, environment: str | None = None, gateway: GatewayClient | None = None
) -> LambdaHandler:
    """A handler sending through `gateway` (default: one for `environment`, or from the env)."""
    client = gateway if gateway is not None else GatewayClient(environment=environment)

    def on_event(event: Event) -> None:
        if event_type(event) == "MESSAGE":
            client.send(event["requestContext"]["connectionId"], message_data(event))

    return gateway_handler(on_event, gateway=client)


handler = lazy_handler(build_handler)
