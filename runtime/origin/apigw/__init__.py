"""API Gateway WebSocket handlers as the gateway's origin, with no line of theirs changed.

Set a Lambda function's handler to `runtime.origin.apigw.handler` and name the team's own
functions in its environment. Each event reaches the function of its route with `(event, context)`
as API Gateway would call it, and the boto3 `apigatewaymanagementapi` clients it makes (any
`endpoint_url`) are answered here: `post_to_connection` and `delete_connection` become the
gateway's commands, `get_connection` asks the node that holds the connection. What API Gateway
has no call for (channels) a function reaches through `gateway()`, the buffer its posts go into.
docs/coming-from-api-gateway.md is the guide.

Settings (environment variables, read at the first invocation):

- `WSGW_HANDLER`: `module.function` for every route.
- `WSGW_ROUTE_HANDLERS`: functions per route, as JSON (`{"$connect": "app.connect", ...}`) or
  `$connect=app.connect,sendmessage=app.send`. A route's own entry wins over `WSGW_HANDLER`; a
  message whose route has neither goes to the `$default` entry. One of the two is required.
- `WSGW_GONE_ROUTE`: where GONE events go. `$disconnect` (default): to the $disconnect function,
  as a DISCONNECT with code 1006; `none`: nowhere; any other name: that route's function, as is.
- `WSGW_ASYNC_CONNECT`: `skip` (default) leaves out the CONNECT events the node marks
  `connectHandled` (it called $connect during the handshake already); `run` hands them too.
- `WSGW_POST_VIA`: `commands` (default): posts and deletes are buffered and published through the
  SNS commands topic once the invocation's events are handled (once per SQS batch, in as few
  messages as fit; for a bare event, when its function returns); `connections`: each is an HTTP
  call to the node's @connections API at once, which answers GoneException exactly.
- `WSGW_CONNECTIONS_URL` (a node's command listener, `http://10.0.0.5:8081`) or
  `WSGW_CONNECTIONS_PORT` (every node's command port, reached at the address inside each
  connection ID): where the @connections API is. `WSGW_CONNECTIONS_TOKEN` goes with each call as
  `X-Gateway-Token`; `WSGW_CONNECTIONS_TIMEOUT` bounds it (seconds, default 5).
- GatewayClient's own: `WSGW_ENVIRONMENT` (required with `WSGW_POST_VIA=commands`) and
  `WSGW_ACCOUNT_ID`.

Two invocation shapes: an SQS batch from the events queue, answered with `batchItemFailures`
(a record may hold many events packed by the node; each goes to its function on its own, as
API Gateway would have called it); and a bare API Gateway event (the node's synchronous
$connect call invokes this same entry point), answered with the function's own result.

This package's `__init__` is its public face: `handler` (the Lambda entry point) and the names an
origin imports. The parts: `settings.py` reads the WSGW_* variables and the user's functions,
`management.py` answers the apigatewaymanagementapi calls, `botocore_hook.py` is how boto3 calls
land there, and `origin.py` hands each event to its function.
"""

from __future__ import annotations

from runtime.origin.apigw.botocore_hook import answering, install
from runtime.origin.apigw.management import ClosedConnections
from runtime.origin.apigw.origin import (
    ApiGatewayOrigin,
    answer_status,
    entry_point_from_environment,
    gone_as_disconnect,
)
from runtime.origin.apigw.settings import (
    ApiGatewaySettings,
    HandlerSetupError,
    parse_route_handlers,
)
from runtime.origin.client import GatewayClient

__all__ = [
    "ApiGatewayOrigin",
    "ApiGatewaySettings",
    "ClosedConnections",
    "HandlerSetupError",
    "answer_status",
    "entry_point_from_environment",
    "gateway",
    "gone_as_disconnect",
    "handler",
    "install",
    "parse_route_handlers",
]

handler = entry_point_from_environment()


def gateway() -> GatewayClient:
    """The gateway's client for the event being handled, for what API Gateway has no call for:
    channels (`subscribe`, `unsubscribe`, `publish_to_channel`) and the rest of GatewayClient.

    Its commands go out with the event's `post_to_connection` calls (after the batch, or when
    the function returns) and are dropped with them if the event fails, so a ported handler can
    add channels without changing how it posts. Only inside a function this entry point runs.
    """
    api = answering()
    if api is None:
        raise RuntimeError(
            "runtime.origin.apigw.gateway() is for a function runtime.origin.apigw.handler "
            "runs, while it handles an event"
        )
    return api.gateway()
