"""The example origin: the chat Lambda function from runtime/, its role, and its queue.

It shows the whole loop working after `cdk deploy`, and is the template for wiring one's own
origin: consume the events queue with partial batch responses, publish commands to the topic.
Its rooms are channels, so it keeps no state and has no table. A reply to a connection of
another region goes to that region's commands topic, and a channel publish goes to every
region's (`WSGW_REGIONS`, since each region's nodes know only their own subscribers), so the
function may publish to all of them.
The function's package is the origin SDK from the `runtime` directory as is, with the few modules
it imports (it needs only boto3, which the Lambda runtime provides), so there is no bundling step
and no Docker.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.messaging import EVENTS_VISIBILITY_TIMEOUT, GatewayMessaging
from infra.retention import log_retention
from infra.service import PROJECT_ROOT

HANDLER = "runtime.origin.examples.chat.handler"
RUNTIME = lambda_.Runtime.PYTHON_3_14
TIMEOUT = cdk.Duration.seconds(30)
# Only the origin SDK and the modules it imports go into the function's zip (not the node, not the
# local system); gitignore-style patterns. tests/infra/test_infra_container.py checks that the
# SDK's imports all resolve inside the package and that nothing else is there.
ASSET_EXCLUDES = [
    "/*",
    "!/runtime/",
    "/runtime/*",
    "!/runtime/__init__.py",
    "!/runtime/names.py",
    "!/runtime/origin/",
    "!/runtime/wire/",
    "/runtime/wire/*",
    "!/runtime/wire/__init__.py",
    "!/runtime/wire/channels.py",  # the channel commands, imported by commands.py
    "!/runtime/wire/command_fields.py",  # what commands.py and channels.py share
    "!/runtime/wire/commands.py",
    "!/runtime/wire/connection_id.py",
    "!/runtime/wire/graphql_contract.py",  # the GraphQL key limits the SDK shares with the node
    "!/runtime/wire/graphql_ws.py",  # imported by graphql_contract.py
    "!/runtime/wire/presence.py",  # the presence answers, for the SDK's PresenceClient
    "__pycache__/",
    "*.pyc",
    ".*_cache/",
]
LAMBDA_ARCHITECTURES = {"ARM64": lambda_.Architecture.ARM_64, "X86_64": lambda_.Architecture.X86_64}
# FIFO queues hand Lambda at most 10 messages and allow no batching window. Messages are packed
# (up to 64 KiB of events each, about a hundred), so 10 of them are plenty for one invocation
# within its timeout on a standard queue too; the window lets light load fill them.
FIFO_BATCH_SIZE = 10
STANDARD_BATCH_SIZE = 10
STANDARD_BATCHING_WINDOW = cdk.Duration.seconds(1)

if TIMEOUT.to_seconds() * 6 > EVENTS_VISIBILITY_TIMEOUT.to_seconds():
    raise AssertionError("the events queue's visibility timeout must be 6x the function timeout")


class ExampleOrigin(Construct):
    """Chat rooms on channels, driven by gateway events, answering with commands."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        messaging: GatewayMessaging,
        environment_name: str,
        regions: tuple[str, ...],
        architecture: str,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        names = messaging.names
        stack = cdk.Stack.of(self)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention(log_retention_days))
        # Written out instead of AWSLambdaBasicExecutionRole: logs to this group only.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Example chat origin: events in, commands out",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            description="Example gateway origin: chat rooms (runtime.origin.examples.chat)",
            runtime=RUNTIME,
            architecture=(
                lambda_.Architecture.ARM_64
                if architecture == "ARM64"
                else lambda_.Architecture.X86_64
            ),
            handler=HANDLER,
            code=lambda_.Code.from_asset(
                str(PROJECT_ROOT), exclude=ASSET_EXCLUDES, ignore_mode=cdk.IgnoreMode.GIT
            ),
            memory_size=256,
            timeout=TIMEOUT,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                "WSGW_ENVIRONMENT": environment_name,
                "WSGW_ACCOUNT_ID": cdk.Aws.ACCOUNT_ID,  # saves an STS call per cold start
                "WSGW_REGIONS": ",".join(regions),  # where a channel publish goes
            },
        )
        # Replies go to the region of each connection, and channel publishes to every region:
        # so to every region's commands topic.
        iam.Grant.add_to_principal(
            grantee=self.function,
            actions=["sns:Publish"],
            resource_arns=[
                stack.format_arn(
                    service="sns",
                    region=other,
                    resource=names.commands_topic,
                    arn_format=cdk.ArnFormat.NO_RESOURCE_NAME,
                )
                if other != stack.region
                else messaging.commands_topic.topic_arn
                for other in regions
            ],
        )
        fifo = names.fifo
        self.function.add_event_source(
            event_sources.SqsEventSource(
                messaging.events_queue,
                batch_size=FIFO_BATCH_SIZE if fifo else STANDARD_BATCH_SIZE,
                max_batching_window=None if fifo else STANDARD_BATCHING_WINDOW,
                report_batch_item_failures=True,  # one bad event does not redeliver the batch
            )
        )
